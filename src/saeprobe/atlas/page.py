"""The atlas pages: per SAE an `index.html` (the template `sae.html`: a sortable, searchable
index of its alive latents and a panel per latent, `#latent-<n>`) with its data in `data.js`,
and one `index.html` at the top listing every SAE. Plain HTML and one inline script; the data
are scripts, not JSON, so the pages work when opened from the file system."""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any


def sae_folder(model: str, site: str, name: str) -> Path:
    """The SAE's folder under the atlas root."""
    return Path("saes") / model / site / name


def root_from(folder: Path) -> str:
    """The atlas root relative to a folder under it (`sae_folder`), ending in '/'."""
    return "../" * len(folder.parts)


def write_sae_page(folder: str | Path, data: Mapping[str, Any], media_script: str | None) -> None:
    """Write `folder/index.html` and `folder/data.js` (`window.ATLAS = data`).

    data: sae (id, model, site, name, family, dataset, width, arch, k, rows, examples, alive),
    root (the atlas root relative to the page), media (dataset name or None), roles ([[key,
    label, kind]]), absent (labels of roles no task produced), edges (histogram bin edges),
    latents ([{i, freq, mean, max, r: {role: value}, top: [[example, value]], tok: per top
    example its rows' codes or None, h: [first bin, counts...], nn: [[latent, cosine]], strip:
    row in the strip sheet or None}]), texts ({example: [token text per row, "" for image
    rows]} or None), strip (file, size, strengths, prompt) or None.
    media_script: path of the dataset's media script relative to `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "data.js").write_text(
        "window.ATLAS = " + json.dumps(data, separators=(",", ":"), allow_nan=False) + ";\n"
    )
    scripts = [f'<script src="{html.escape(media_script)}"></script>'] if media_script else []
    scripts.append('<script src="data.js"></script>')
    template = resources.files("saeprobe.atlas").joinpath("sae.html").read_text()
    page = template.replace("__TITLE__", html.escape(f"atlas: {data['sae']['id']}"))
    (folder / "index.html").write_text(page.replace("__SCRIPTS__", "\n".join(scripts)))


def write_root_index(out_dir: str | Path, saes: Sequence[Mapping[str, Any]], setting: str) -> None:
    """`out_dir/index.html`: one row per SAE (its `sae` record plus `folder`), linking its page."""
    rows = []
    for s in saes:
        link = html.escape(f"{s['folder']}/index.html")
        cells = [
            f'<a href="{link}">{html.escape(s["id"])}</a>',
            *(html.escape(str(s[k])) for k in ("family", "dataset", "arch", "width", "alive")),
        ]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    head = "".join(
        f"<th>{h}</th>" for h in ("SAE", "family", "dataset", "arch", "width", "alive latents")
    )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>latent atlas</title>
<style>body {{ font: 14px/1.4 system-ui, sans-serif; margin: 16px; }}
table {{ border-collapse: collapse; }} td, th {{ padding: 2px 10px; text-align: left; }}
th {{ border-bottom: 1px solid #ccc; }}</style></head>
<body><h1>Latent atlas</h1>
<p>Every alive latent of every SAE of {html.escape(setting)}: its statistics on the SAE's
evaluation dataset, its top examples and what each task found about it.</p>
<table id="saes"><thead><tr>{head}</tr></thead><tbody>
{chr(10).join(rows)}
</tbody></table></body></html>
"""
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    (Path(out_dir) / "index.html").write_text(page)
