"""Snakemake script (rules download_coco_annotations, download_coco_images): one COCO 2017
archive, downloaded into params.root/zips and unzipped into params.root.

params.archive: (url, sha256) from `saeprobe.config.coco_archive` (sha256 null = trust the first
download and record its checksum next to it); params.root: the COCO root (mllm.coco.root), the
parent of the annotations/ or {split}/ folder the rule writes.
"""

from saeprobe.data.download import download_coco
from saeprobe.jobs import job

with job(snakemake) as j:
    url, sha256 = j.params.archive
    download_coco(url, sha256, j.params.root)
