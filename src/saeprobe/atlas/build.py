"""Build the latent atlas of a pipeline's SAEs (`saeprobe.atlas`): one page per SAE, the
thumbnails of each dataset once, and a top index."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from saeprobe.activations.store import ActivationStore
from saeprobe.atlas.encode import EncodedSite
from saeprobe.atlas.media import fit, strip_sheet, write_media
from saeprobe.atlas.page import root_from, sae_folder, write_root_index, write_sae_page
from saeprobe.atlas.roles import ROLES, latent_roles, role_value
from saeprobe.atlas.stats import HIST_EDGES, accumulate, decoder_neighbours, top_token_codes
from saeprobe.config import FromConfig

log = logging.getLogger(__name__)
TEXT_ROLES = {"name", "top_label", "lch", "steering_concept", "attribute"}


@dataclass(frozen=True)
class AtlasSettings(FromConfig):
    """top_examples: examples shown per latent; neighbours: decoder neighbours per latent;
    thumbnail_px: largest thumbnail side (smaller thumbnails are kept as they are);
    thumbnail_format: png or jpeg sheets (`media.write_media`)."""

    config_key: ClassVar[str] = "atlas"
    top_examples: int = 12
    neighbours: int = 5
    thumbnail_px: int = 64
    thumbnail_format: str = "png"


@dataclass(frozen=True)
class AtlasSae:
    """One SAE of the atlas: its identity, directory, and the store site and dataset it is read
    on (the dataset's spec as the pipeline fills it: source, root, split...)."""

    model: str
    site: str
    name: str
    family: str
    sae_dir: str
    store: str
    dataset: str
    dataset_spec: Mapping[str, Any]

    @property
    def id(self) -> str:
        return f"{self.model}/{self.site}/{self.name}"


def _round(x: float, digits: int = 4) -> float:
    return float(f"{float(x):.{digits}g}")


def _rounded(x: np.ndarray, digits: int = 4) -> list[float]:
    """x rounded to `digits` significant digits, as a list (`_round`, vectorised)."""
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(divide="ignore"):
        scale = digits - 1 - np.floor(np.log10(np.abs(x), where=x != 0, out=np.zeros_like(x)))
    return (np.round(x * 10.0**scale) / 10.0**scale).tolist()


def dataset_thumbnails(
    store: ActivationStore, spec: Mapping[str, Any], indices: Sequence[int], size: int
) -> dict[int, np.ndarray] | None:
    """{example index: thumbnail} of `indices`, from the thumbnails saved at extraction (image +
    caption pairs, image folders extracted with thumbnails: no file is opened), the world's
    stored images or, for an image folder extracted without them, its files (decoded again, only
    the shown examples); None for a dataset without images (prompts)."""
    if not len(indices):
        return {}
    images = store.example_thumbnails(spec, indices, size)
    if images is None:
        return None
    return {int(i): fit(im, size) for i, im in zip(indices, images, strict=True)}


def token_texts(words: Sequence[str]) -> list[str]:
    """Tokens as shown, spaces included: CLIP's byte-pair tokens end a word with "</w>",
    SentencePiece's start one with "\u2581"; tokens with neither mark are whole words."""
    if any(w.endswith("</w>") for w in words):
        return [w.removesuffix("</w>") + " " if w.endswith("</w>") else w for w in words]
    if any(w.startswith("\u2581") for w in words):
        return [" " + w[1:] if w.startswith("\u2581") else w for w in words]
    return [w + " " if w else w for w in words]


def example_texts(store: ActivationStore, indices: Sequence[int]) -> dict[str, list[str]] | None:
    """{example index: the text of each of its rows as shown (`token_texts`; "" for image
    rows)}; None for a store without tokens."""
    columns = store.metadata["columns"]
    if "token_id" not in columns:
        return None
    example = np.asarray(store.example_index())
    token = np.asarray(store.column("token_id"))
    modality = np.asarray(store.column("modality")) if "modality" in columns else None
    vocab = store.vocab()
    out = {}
    for i in indices:
        a, b = np.searchsorted(example, i, "left"), np.searchsorted(example, i, "right")
        out[str(int(i))] = token_texts(
            [
                "" if modality is not None and modality[r] == 0 else vocab.get(int(token[r]), "?")
                for r in range(a, b)
            ]
        )
    return out


def read_strips(path: str | Path | None) -> dict[str, Any] | None:
    """The steering strips (`saeprobe.eval.steering.write_strips`), or None."""
    if path is None or not Path(path).is_file():
        return None
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def sae_atlas(
    spec: AtlasSae,
    settings: AtlasSettings,
    tables: Mapping[str, Sequence[str | Path]],
    strips: Mapping[str, Any] | None,
    folder: Path,
) -> tuple[dict[str, Any], set[int]]:
    """The page data of one SAE (`write_sae_page`) and the examples its page shows."""
    store = ActivationStore(spec.store)
    site = EncodedSite(Path(spec.sae_dir), store)

    def chunks():
        return (c for _, c in site.chunks())

    stats = accumulate(chunks(), site.width, settings.top_examples)
    alive = np.flatnonzero(stats.alive)
    nn_i, nn_c = decoder_neighbours(site.decoder(), settings.neighbours)
    roles = latent_roles(spec.id, spec.model, spec.site, spec.name, tables)
    texts = example_texts(store, sorted({int(e) for e in stats.top_examples[alive].ravel()} - {-1}))
    tok = top_token_codes(chunks(), stats.top_examples, alive) if texts is not None else {}
    strip_row: dict[int, int] = {}
    strip = None
    if strips is not None and str(strips["sae"]) == spec.id:
        for row, latent in enumerate(strips["latents"]):
            strip_row.setdefault(int(latent), row)
        size = strip_sheet(list(strips["images"]), folder / "steering.png")
        strip = {
            "file": "steering.png",
            "size": size,
            "strengths": [float(s) for s in strips["strengths"]],
            "prompt": str(strips["prompt"]),
        }
    freq, mean, high = (_rounded(a) for a in (stats.frequency, stats.mean_activation, stats.max))
    top_values, nn_cos = _rounded(stats.top_values), _rounded(nn_c, 3)
    latents, used = [], set()
    for j in alive:
        top = [
            (int(e), v)
            for e, v in zip(stats.top_examples[j], top_values[j], strict=True)
            if e >= 0 and v > 0
        ]
        used |= {e for e, _ in top}
        counts = stats.histogram[j]
        nz = np.flatnonzero(counts)
        r = roles.loc[j].to_dict() if j in roles.index else {}
        latents.append(
            {
                "i": int(j),
                "freq": freq[j],
                "mean": mean[j],
                "max": high[j],
                "r": {k: role_value(v) for k, v in r.items() if role_value(v) is not None},
                "top": [[e, v] for e, v in top],
                "tok": (
                    [_rounded(tok[(int(j), e)], 3) for e, _ in top] if texts is not None else None
                ),
                "h": [int(nz[0]), *(int(c) for c in counts[nz[0] : nz[-1] + 1])],
                "nn": [[int(a), c] for a, c in zip(nn_i[j], nn_cos[j], strict=True)],
                "strip": strip_row.get(int(j)),
            }
        )
    cfg = site.sae.cfg
    present = [c for c in ROLES if c in roles.columns]
    data = {
        "sae": {
            "id": spec.id,
            "model": spec.model,
            "site": spec.site,
            "name": spec.name,
            "family": spec.family,
            "dataset": spec.dataset,
            "width": site.width,
            "arch": cfg.arch,
            "k": cfg.k,
            "rows": stats.rows,
            "examples": len(np.unique(site.example)),
            "alive": len(alive),
        },
        "media": None,
        "roles": [[c, ROLES[c][0], "text" if c in TEXT_ROLES else "num"] for c in present],
        "absent": [label for c, (label, _) in ROLES.items() if c not in present],
        "edges": [_round(e, 3) for e in HIST_EDGES],
        "latents": latents,
        "texts": ({str(e): texts[str(e)] for e in sorted(used)} if texts is not None else None),
        "strip": strip,
    }
    log.info("%s: %d of %d latents alive on %s", spec.id, len(alive), site.width, spec.dataset)
    return data, used


def build_atlas(
    saes: Sequence[AtlasSae],
    tables: Mapping[str, Any],
    out_dir: str | Path,
    settings: AtlasSettings,
    setting: str,
    strips: str | Path | None = None,
) -> list[dict[str, Any]]:
    """Write the atlas of `saes` into out_dir; returns the SAE records of the top index.

    tables: {task: CSV files} for `latent_roles`, and "crossmodal": {SAE id: its latents.csv}.
    strips: the steering task's strips (`read_strips`), or None."""
    out = Path(out_dir)
    steering = read_strips(strips)
    pages: list[tuple[AtlasSae, Path, dict[str, Any]]] = []
    used: dict[str, set[int]] = {}
    stores: dict[str, tuple[ActivationStore, Mapping[str, Any]]] = {}
    crossmodal = tables.get("crossmodal", {})
    for spec in saes:
        folder = out / sae_folder(spec.model, spec.site, spec.name)
        own = {**tables, "crossmodal": [crossmodal[spec.id]] if spec.id in crossmodal else []}
        data, shown = sae_atlas(spec, settings, own, steering, folder)
        pages.append((spec, folder, data))
        used.setdefault(spec.dataset, set()).update(shown)
        stores.setdefault(spec.dataset, (ActivationStore(spec.store), spec.dataset_spec))
    (out / "media").mkdir(parents=True, exist_ok=True)  # empty where no dataset has images
    with_media = set()
    for dataset, indices in used.items():
        store, dataset_spec = stores[dataset]
        thumbs = dataset_thumbnails(store, dataset_spec, sorted(indices), settings.thumbnail_px)
        if thumbs is not None:
            write_media(out, dataset, thumbs, settings.thumbnail_px, settings.thumbnail_format)
            with_media.add(dataset)
    records = []
    for spec, folder, data in pages:
        media = spec.dataset if spec.dataset in with_media else None
        data["media"] = media
        data["root"] = root_from(folder.relative_to(out))
        script = f"{data['root']}media/{media}.js" if media else None
        write_sae_page(folder, data, script)
        records.append({**data["sae"], "folder": folder.relative_to(out).as_posix()})
    write_root_index(out, records, setting)
    return records
