"""Download ImageNet's WordNet files (checksummed, resumable) and write the hierarchy."""

import logging
import sys
from pathlib import Path

from saeprobe.data.download import ensure
from saeprobe.data.wordnet import read_wordnet
from saeprobe.hierarchy import write_hierarchy

with open(snakemake.log[0], "a") as log_file:
    sys.stderr = log_file
    logging.basicConfig(stream=log_file, level=logging.INFO)
    out = Path(snakemake.output[0])
    files = {}
    for key in ("is_a", "words"):
        entry = snakemake.params[key]
        files[key] = ensure(entry["url"], out.parent / Path(entry["url"]).name, entry.get("sha256"))
    hierarchy = read_wordnet(files["is_a"], files["words"])
    logging.info("%r", hierarchy)
    write_hierarchy(hierarchy, out)
