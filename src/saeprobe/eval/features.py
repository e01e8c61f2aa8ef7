"""Per-image features of one activation site: raw activations, SAE codes, labels.

The vision tasks work on one row per image. Sites with one token per image (`cls`, `mean`,
`pooled`) are used as stored; multi-token sites (`patches`, `all`) are averaged over the
image's tokens (raw activations before, SAE codes after encoding each token).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from saeprobe.activations.store import ActivationStore
from saeprobe.hierarchy import Hierarchy
from saeprobe.sae.io import load_sae
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

    def per_image(self, rows: np.ndarray) -> np.ndarray:
        """Average row features over each image's tokens: (rows, k) -> (n_images, k) float32."""
        if len(rows) == self.n_images and np.array_equal(
            self.image_of_row, np.arange(self.n_images)
        ):
            return np.asarray(rows, dtype=np.float32)
        out = np.zeros((self.n_images, rows.shape[1]), dtype=np.float64)
        np.add.at(out, self.image_of_row, rows)
        counts = np.bincount(self.image_of_row, minlength=self.n_images).clip(min=1)
        return (out / counts[:, None]).astype(np.float32)

    @property
    def raw(self) -> np.ndarray:
        """(n_images, d) float32 raw activations per image."""
        return self.per_image(self.tokens)


def load_site(
    activation_dir: str | Path, site: str, max_images: int | None = None, seed: int = 0
) -> SiteData:
    """Read `{activation_dir}/{site}` (a model's store on one dataset) into memory.

    max_images keeps a seeded random subset of that many images (all rows of each).
    """
    store = ActivationStore(Path(activation_dir) / site)
    images = store.examples().set_index("index", drop=False)
    image_index = np.asarray(store.example_index())
    present = np.unique(image_index)
    if max_images is not None and max_images < len(present):
        rng = np.random.default_rng(seed)
        present = np.sort(rng.choice(present, size=max_images, replace=False))
    keep = np.isin(image_index, present)
    rows = np.flatnonzero(keep)
    tokens = store.read_all(dtype=np.float32)[rows] if len(rows) < len(store) else store.read_all()
    position = np.searchsorted(present, image_index[rows])
    table = images.loc[present].reset_index(drop=True)
    return SiteData(
        tokens=np.asarray(tokens, dtype=np.float32), image_of_row=position, images=table
    )


def iter_codes(sae: SAE, tokens: np.ndarray, chunk: int = 8192) -> Iterator[np.ndarray]:
    """SAE codes of `tokens` (rows, d) in chunks of (<= chunk, width) float32 arrays."""
    device = sae.W_enc.device
    with torch.no_grad():
        for start in range(0, len(tokens), chunk):
            x = torch.from_numpy(np.ascontiguousarray(tokens[start : start + chunk])).to(device)
            yield sae.encode(x).float().cpu().numpy()


def sae_codes(sae: SAE, data: SiteData, chunk: int = 8192) -> np.ndarray:
    """(n_images, width) float32 SAE codes per image (token codes averaged per image)."""
    rows = np.concatenate(list(iter_codes(sae, data.tokens, chunk)), axis=0)
    return data.per_image(rows)


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

    def load_saes(self, site: str, device: torch.device) -> dict[str, SAE]:
        out = {}
        for name in self.sae_names:
            sae = load_sae(self.saes / self.model / site / name, device=device)
            sae.eval()
            out[name] = sae
        return out

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
    """(features name, (n_images, units) array, SAE codes?) for raw and every SAE."""
    yield RAW, data.raw, False
    for name, sae in sites.load_saes(site, device).items():
        yield name, sae_codes(sae, data), True
