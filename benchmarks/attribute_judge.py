"""Benchmark: does attribute discovery's judge name the attribute an image gains?

Ground truth from the world's test split: pairs of real renderings that differ in one attribute
group (colour, shape or background; the other two the same, position, size and rotation free,
as a steered image's are). For each pair the judge must name the second image's value of that
group (for a shape, its superclass counts too when that changes). Two judges are compared: the
one attribute discovery uses (`saeprobe.diffusion.steering.AttributeJudge`: the largest rise of
the zero-shot probability within each group) and the raw CLIP-score change (the largest rise
of the cosine to an attribute text). The last line printed is a JSON object.

  python benchmarks/attribute_judge.py --results results
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from saeprobe.diffusion.experiment import load_scorer, world_vocabulary
from saeprobe.diffusion.metrics import clip_scores
from saeprobe.diffusion.steering import AttributeJudge
from saeprobe.world.generate import load_split, load_vocab

GROUPS = ("colour", "shape", "background")


def pairs(manifest: pd.DataFrame, group: str, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n pairs (first, second) of filled renderings differing in `group` only."""
    rng = np.random.default_rng([seed, GROUPS.index(group)])
    same = [g for g in GROUPS if g != group]
    filled = manifest[manifest["rendering"] == "filled"]
    first, second = [], []
    while len(first) < n:
        a = filled.iloc[rng.integers(len(filled))]
        match = (filled[same[0]] == a[same[0]]) & (filled[same[1]] == a[same[1]])
        other = filled[match & (filled[group] != a[group])]
        if len(other):
            first.append(int(a["index"]))
            second.append(int(other["index"].iloc[rng.integers(len(other))]))
    return np.array(first), np.array(second)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default="results", help="a results dir with world/ and models/")
    ap.add_argument("--pairs", type=int, default=3000, help="pairs per group")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    results = Path(args.results)
    images, manifest = load_split(results / "world", "test")
    vocabulary, groups = world_vocabulary(load_vocab(results / "world"))
    scorer = load_scorer({"source": "world"}, results / "models/world_clip", torch.device("cpu"))
    judge = AttributeJudge(scorer, vocabulary, groups)
    emb = scorer.images(images)
    attrs = np.asarray(judge.attrs)
    out: dict[str, dict[str, float]] = {}
    for group in GROUPS:
        first, second = pairs(manifest, group, args.pairs, args.seed)
        truth = manifest.set_index("index").loc[second]
        start = manifest.set_index("index").loc[first]
        ok = truth[group].to_numpy()[:, None]
        if group == "shape":  # a new superclass is also a right answer when it changed
            changed = truth["superclass"].to_numpy() != start["superclass"].to_numpy()
            ok = np.stack([ok[:, 0], np.where(changed, truth["superclass"], ok[:, 0])], 1)
        raw = clip_scores(emb[second], judge.text_emb) - clip_scores(emb[first], judge.text_emb)
        named = {
            "probability": attrs[judge.change(emb[second], emb[first]).argmax(1).numpy()],
            "raw_clip_score": attrs[raw.argmax(1).numpy()],
        }
        out[group] = {k: float((v[:, None] == ok).any(1).mean()) for k, v in named.items()}
        print(group, out[group])
    print(json.dumps({"results": str(results), "pairs": args.pairs, "accuracy": out}))


if __name__ == "__main__":
    main()
