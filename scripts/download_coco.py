"""Snakemake script (rule download_coco): COCO 2017 val images and annotations, unzipped.

params.coco: root, annotations_url, images_url, annotations_sha256, images_sha256 (null = trust
the first download and record its checksum next to it).
"""

import logging
import os
import shutil
import sys
import zipfile
from pathlib import Path

from saeprobe.data.download import ensure

with open(snakemake.log[0], "w") as log_file:
    sys.stderr = log_file
    logging.basicConfig(stream=log_file, level=logging.INFO)
    coco = dict(snakemake.params.coco)
    root = Path(snakemake.output.images).parent
    for what in ("annotations", "images"):
        url = coco[f"{what}_url"]
        archive = ensure(url, root / "zips" / Path(url).name, coco.get(f"{what}_sha256"))
        tmp = root / f".{what}.unzip"
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(tmp)
        # merge into root file by file: snakemake has already created the outputs' parents
        for path in sorted(tmp.rglob("*")):
            if path.is_file():
                target = root / path.relative_to(tmp)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, target)
        shutil.rmtree(tmp)
        logging.info("%s: unzipped %s into %s", what, archive, root)
