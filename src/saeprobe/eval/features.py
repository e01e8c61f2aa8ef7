"""Per-image features of one activation site: raw activations, SAE codes, labels.

The vision tasks work on one row per image. Sites with one token per image (`cls`, `mean`,
`pooled`) are used as stored; multi-token sites (`patches`, `all`) are averaged over the
image's tokens (raw activations before, SAE codes after encoding each token).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from saeprobe.activations.store import ActivationStore
from saeprobe.hierarchy import Hierarchy
from saeprobe.sae.io import CFG, load_sae, read_json
from saeprobe.sae.models import SAE


@dataclass
class SiteData:
    """One site of one model on one dataset, one row per image (in dataset-index order).

    tokens: (rows, d) float32 stored activations; image_of_row: (rows,) position of each row's
    image in `images`; images: the image table (index, label, attributes, path...).
    """

    tokens: np.ndarray
    image_of_row: np.ndarray
    images: pd.DataFrame

    @property
    def n_images(self) -> int:
        return len(self.images)

    @property
    def labels(self) -> np.ndarray:
        return self.images["label"].astype(str).to_numpy()

    @property
    def one_row_per_image(self) -> bool:
        return len(self.image_of_row) == self.n_images and np.array_equal(
            self.image_of_row, np.arange(self.n_images)
        )

    def per_image(self, rows: np.ndarray, chunk: int = 65536) -> np.ndarray:
        """Average row features over each image's tokens: (rows, k) -> (n_images, k) float32.

        Summed in float32, `chunk` rows at a time (no float64 copy of a patch-token site)."""
        if self.one_row_per_image:
            return np.asarray(rows, dtype=np.float32)
        out = ImageMeans(self.image_of_row, self.n_images, rows.shape[1])
        for start in range(0, len(rows), chunk):
            out.add(start, rows[start : start + chunk])
        return out.result()

    @property
    def raw(self) -> np.ndarray:
        """(n_images, d) float32 raw activations per image."""
        return self.per_image(self.tokens)


class ImageMeans:
    """Per-image means of row features accumulated chunk by chunk in float32.

    image_of_row: (rows,) each row's image position; add(start, chunk) takes rows
    [start, start + len(chunk)) of the (rows, k) features."""

    def __init__(self, image_of_row: np.ndarray, n_images: int, k: int) -> None:
        self.image_of_row = torch.from_numpy(np.asarray(image_of_row, dtype=np.int64))
        self.sums = torch.zeros(n_images, k, dtype=torch.float32)
        counts = torch.bincount(self.image_of_row, minlength=n_images).clamp_min(1)
        self.counts = counts.to(torch.float32).unsqueeze(1)

    def add(self, start: int, chunk: np.ndarray | torch.Tensor) -> None:
        x = torch.as_tensor(chunk, dtype=torch.float32)
        self.sums.index_add_(0, self.image_of_row[start : start + len(x)], x)

    def result(self) -> np.ndarray:
        """(n_images, k) float32."""
        return self.sums.div_(self.counts).numpy()


def load_site(
    activation_dir: str | Path, site: str, max_images: int | None = None, seed: int = 0
) -> SiteData:
    """Read `{activation_dir}/{site}` (a model's store on one dataset) into memory.

    max_images keeps a seeded random subset of that many images (all rows of each); only the
    rows of the kept images are read from the store.
    """
    store = ActivationStore(Path(activation_dir) / site)
    images = store.examples().set_index("index", drop=False)
    image_index = np.asarray(store.example_index())
    present = np.unique(image_index)
    if max_images is not None and max_images < len(present):
        rng = np.random.default_rng(seed)
        present = np.sort(rng.choice(present, size=max_images, replace=False))
        rows = np.flatnonzero(np.isin(image_index, present))
        tokens = store.take(rows)
    else:
        rows = np.arange(len(store))
        tokens = store.read_all(dtype=np.float32)
    position = np.searchsorted(present, image_index[rows])
    table = images.loc[present].reset_index(drop=True)
    return SiteData(tokens=tokens, image_of_row=position, images=table)


def iter_codes(sae: SAE, tokens: np.ndarray, chunk: int = 8192) -> Iterator[np.ndarray]:
    """SAE codes of `tokens` (rows, d) in chunks of (<= chunk, width) float32 arrays."""
    device = sae.W_enc.device
    with torch.no_grad():
        for start in range(0, len(tokens), chunk):
            x = torch.from_numpy(np.ascontiguousarray(tokens[start : start + chunk])).to(device)
            yield sae.encode(x).float().cpu().numpy()


def sae_codes(
    sae: SAE, data: SiteData, chunk: int = 8192, latents: np.ndarray | None = None
) -> np.ndarray:
    """(n_images, width) float32 SAE codes per image (token codes averaged per image), encoded
    `chunk` tokens at a time; `latents` keeps only those columns, (n_images, len(latents))."""
    width = int(sae.W_enc.shape[1]) if latents is None else len(latents)
    one_row = data.one_row_per_image
    out = np.empty((data.n_images, width), np.float32) if one_row else None
    means = None if one_row else ImageMeans(data.image_of_row, data.n_images, width)
    start = 0
    for codes in iter_codes(sae, data.tokens, chunk):
        if latents is not None:
            codes = codes[:, latents]
        if out is not None:
            out[start : start + len(codes)] = codes
        else:
            means.add(start, codes)
        start += len(codes)
    return out if out is not None else means.result()


class SaeCodes(Mapping):
    """SAE name -> (n_images, width) float32 codes of one site, encoded when asked for.

    Only the last SAE asked for is kept, so iterating over the SAEs of a site holds one code
    matrix at a time (16,384 latents x 50,000 images is 3.3 GB)."""

    def __init__(self, sites: ModelSites, site: str, data: SiteData, device: torch.device):
        self.sites, self.site, self.data, self.device = sites, site, data, device
        self._last: tuple[str, np.ndarray] | None = None

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self.sites.sae_names:
            raise KeyError(name)
        if self._last is None or self._last[0] != name:
            self._last = None
            self._last = (
                name,
                sae_codes(self.sites.load_sae(self.site, name, self.device), self.data),
            )
        return self._last[1]

    def __iter__(self) -> Iterator[str]:
        return iter(self.sites.sae_names)

    def __len__(self) -> int:
        return len(self.sites.sae_names)


def reconstruction_error(sae: SAE, data: SiteData, chunk: int = 8192) -> np.ndarray:
    """(n_images,) relative squared error ||x - x_hat||^2 / ||x||^2, averaged over tokens."""
    device = sae.W_enc.device
    errors = []
    with torch.no_grad():
        for start in range(0, len(data.tokens), chunk):
            x = torch.from_numpy(np.ascontiguousarray(data.tokens[start : start + chunk])).to(
                device
            )
            x_hat = sae.decode(sae.encode(x)).float()
            num = (x_hat - x).pow(2).sum(-1)
            errors.append((num / x.pow(2).sum(-1).clamp_min(1e-12)).cpu().numpy())
    return data.per_image(np.concatenate(errors)[:, None])[:, 0]


def level_labels(labels: Sequence[str], hierarchy: Hierarchy) -> dict[str, np.ndarray]:
    """Each image's ancestor at every depth of the hierarchy: {"depth1": (n,), ..., "leaf": (n,)}.

    A label shallower than a depth keeps itself at the deeper levels. Labels that are not
    hierarchy nodes raise a KeyError naming them.
    """
    unknown = sorted({str(label) for label in labels} - set(hierarchy.nodes))
    if unknown:
        raise KeyError(f"labels not in the hierarchy: {unknown[:10]}")
    paths = {label: hierarchy.ancestors(label)[::-1] for label in set(labels)}
    max_depth = max(len(p) - 1 for p in paths.values())
    out = {}
    for depth in range(1, max_depth + 1):
        out[f"depth{depth}"] = np.array(
            [paths[label][min(depth, len(paths[label]) - 1)] for label in labels]
        )
    out["leaf"] = np.asarray(labels, dtype=object).astype(str)
    return out


# -- a model's sites and their feature sets (raw activations, SAE codes) --

RAW = "raw"


@dataclass
class ModelSites:
    """Where one model's activations and SAEs are: activations/{model}/{dataset}/{site} and
    saes/{model}/{site}/{name}."""

    model: str
    sites: list[str]
    sae_names: list[str]
    activations: Path
    saes: Path

    def activation_dir(self, dataset: str) -> Path:
        return self.activations / self.model / dataset

    def load_sae(self, site: str, name: str, device: torch.device) -> SAE:
        sae = load_sae(self.saes / self.model / site / name, device=device)
        sae.eval()
        return sae

    def sae_width(self, site: str, name: str) -> int:
        """The SAE's width from its cfg.json (weights not loaded)."""
        return int(read_json(self.saes / self.model / site / name / CFG)["width"])

    def load_saes(self, site: str, device: torch.device) -> dict[str, SAE]:
        return {name: self.load_sae(site, name, device) for name in self.sae_names}

    def sae_id(self, site: str, features: str) -> str:
        return f"{self.model}/{site}/{features}"

    @classmethod
    def from_inputs(
        cls,
        model: str,
        sites: Sequence[str],
        sae_names: Sequence[str],
        activation_dirs: Sequence[str | Path],
        sae_files: Sequence[str | Path],
    ) -> ModelSites:
        """The roots above a job's inputs: activation dirs `{root}/{model}/{dataset}` and sweep
        markers `{root}/{model}/{site}/sweep.json` (all inputs must share them)."""
        roots = {Path(d).parent.parent for d in activation_dirs}
        sae_roots = {Path(f).parents[2] for f in sae_files}
        if len(roots) != 1 or len(sae_roots) != 1:
            raise ValueError(
                f"ModelSites.from_inputs: expected one activation root and one SAE root, got "
                f"{sorted(map(str, roots))} and {sorted(map(str, sae_roots))}"
            )
        return cls(model, list(sites), list(sae_names), roots.pop(), sae_roots.pop())


def random_directions(d: int, count: int, seed: int) -> np.ndarray:
    """(d, count) seeded standard-normal directions, unit norm."""
    w = np.random.default_rng(seed).standard_normal((d, count))
    return w / np.linalg.norm(w, axis=0, keepdims=True)


def group_mean_directions(x: np.ndarray, groups: Sequence[np.ndarray]) -> np.ndarray:
    """Mean of x (n, d) over each boolean mask (n,) of `groups` minus the overall mean, unit
    norm: (d, len(groups))."""
    mean = x.mean(axis=0)
    w = np.stack([x[g].mean(axis=0) - mean for g in groups], axis=1)
    return w / np.linalg.norm(w, axis=0, keepdims=True).clip(min=1e-12)


def class_ids(labels: np.ndarray, classes: Sequence[str]) -> np.ndarray:
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index.get(label, -1) for label in labels], dtype=np.int64)


def site_layer(site: str) -> str:
    """`L11_cls` -> "11"; `pooled` -> "pooled"."""
    return site[1:].split("_")[0] if site.startswith("L") else site


def feature_sets(
    sites: ModelSites, site: str, data: SiteData, device: torch.device
) -> Iterator[tuple[str, np.ndarray, bool]]:
    """(features name, (n_images, units) array, SAE codes?) for raw and every SAE, one SAE
    encoded at a time (drop the array before asking for the next one)."""
    yield RAW, data.raw, False
    for name in sites.sae_names:
        yield name, sae_codes(sites.load_sae(site, name, device), data), True
