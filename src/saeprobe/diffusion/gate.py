"""Which concepts can the world's generator draw? The gate the diffusion tasks read.

Steering towards "yellow" says nothing about the SAE latent if the generator cannot draw yellow
at all, so per concept (each colour, each shape of the prompt-following table of
`saeprobe.diffusion.experiment.prompt_following`) the fraction of images that show it is taken
with a Wilson 95% interval, and a concept is `renderable` when that fraction reaches
`RENDER_THRESHOLD`. Steering and attribute discovery then count only renderable concepts; a
concept without a row in the gate (a background, a superclass; every concept when there is no
gate, as for Stable Diffusion in the paper config) counts.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd

log = logging.getLogger(__name__)

# Default of `diffusion.render_threshold`: a concept is renderable when at least half of the
# images prompted with it show it (chance is 1/8 for a colour and 1/9 for a shape of the world).
RENDER_THRESHOLD = 0.5
GATE_COLUMNS = ["concept", "kind", "n", "correct", "accuracy", "ci_low", "ci_high", "renderable"]


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion k / n (n > 0)."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def concept_gate(table: pd.DataFrame, threshold: float = RENDER_THRESHOLD) -> pd.DataFrame:
    """Per colour and per shape: n images prompted with it, how many show it, accuracy, Wilson
    CI, renderable = accuracy >= threshold.

    table: one row per image with columns colour, shape, colour_ok, shape_ok.
    """
    rows = []
    for kind, ok in (("colour", "colour_ok"), ("shape", "shape_ok")):
        for concept, group in table.groupby(kind, sort=False):
            n, k = len(group), int(group[ok].sum())
            lo, hi = wilson_interval(k, n)
            rows.append(
                {
                    "concept": str(concept),
                    "kind": kind,
                    "n": n,
                    "correct": k,
                    "accuracy": k / n,
                    "ci_low": lo,
                    "ci_high": hi,
                    "renderable": k / n >= threshold,
                }
            )
    return pd.DataFrame(rows, columns=GATE_COLUMNS)


def read_gate(path: str | Path | None) -> dict[str, bool] | None:
    """{concept: renderable} from a gate table, or None (no gate: every concept counts)."""
    if path is None:
        return None
    table = pd.read_csv(path, keep_default_na=False)
    return {str(c): bool(r) for c, r in zip(table["concept"], table["renderable"], strict=True)}


def counts(concept: str, gate: Mapping[str, bool] | None) -> bool:
    """Does `concept` count? Yes without a gate or a row for it, else its `renderable`."""
    return gate is None or gate.get(concept, True)


def gated(concepts: Iterable[str], gate: Mapping[str, bool] | None, what: str) -> list[str]:
    """The concepts that count, in order; logs the ones left out (`what`: for which task)."""
    concepts = list(concepts)
    kept = [c for c in concepts if counts(c, gate)]
    if len(kept) < len(concepts):
        log.info("%s: not renderable, left out: %s", what, sorted(set(concepts) - set(kept)))
    return kept
