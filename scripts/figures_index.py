"""Write results/figures/index.html: every figure of the run on one page (PNG, with its PDF)."""

import html
import logging
import sys
from pathlib import Path

from saeprobe.io import atomic_write_text

with open(snakemake.log[0], "a") as log_file:
    sys.stderr = log_file
    logging.basicConfig(stream=log_file, level=logging.INFO)
    out = Path(snakemake.output[0])
    items = []
    for png in sorted(Path(p) for p in snakemake.input.figures):
        rel = html.escape(png.relative_to(out.parent).as_posix())
        pdf = rel.removesuffix(".png") + ".pdf"
        items.append(
            f'<figure><img src="{rel}" alt="{rel}"><figcaption>{rel} '
            f'(<a href="{pdf}">PDF</a>)</figcaption></figure>'
        )
    page = (
        "<!doctype html><meta charset=utf-8><title>saeprobe figures</title>"
        "<style>img{max-width:100%}figure{margin:2em 0}</style>"
        f"<h1>saeprobe figures ({len(items)})</h1>\n" + "\n".join(items) + "\n"
    )
    atomic_write_text(out, page)
    logging.info("%d figures", len(items))
