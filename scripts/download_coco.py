"""Snakemake script (rule download_coco): COCO 2017 val images and annotations, unzipped.

params.coco: root, annotations_url, images_url, annotations_sha256, images_sha256 (null = trust
the first download and record its checksum next to it). The archives are unzipped into the
parent of output.images (snakemake has already created the outputs' parents).
"""

from pathlib import Path

from saeprobe.data.download import download_coco
from saeprobe.jobs import job

with job(snakemake) as j:
    download_coco(dict(j.params.coco), Path(snakemake.output.images).parent)
