"""Figures of the study's tasks: matplotlib/seaborn, saved as PNG and PDF."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from saeprobe.io import atomic_path


def save_figure(fig: plt.Figure, png: str | Path, pdf: str | Path | None = None) -> None:
    """Write `fig` as PNG (150 dpi) and PDF (the PNG's path with .pdf unless given), atomically."""
    png = Path(png)
    pdf = Path(pdf) if pdf is not None else png.with_suffix(".pdf")
    for path, fmt in ((png, "png"), (pdf, "pdf")):
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=150, bbox_inches="tight", metadata=_metadata(fmt))
    plt.close(fig)


def _metadata(fmt: str) -> dict:
    # No creation dates: the same data gives byte-identical figures.
    return {"CreationDate": None} if fmt == "pdf" else {"Software": None}
