"""The steering and attribute-discovery experiments end to end, as the workflow runs them.

`load_scorer` builds the CLIP that scores images (world CLIP or an open_clip hub model);
`run_steering_experiment` / `run_attribute_experiment` loop over every (site, SAE) and return
the rows of `steering.csv` / `attributes.csv` plus the images the figures show.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from saeprobe.config import load_section
from saeprobe.diffusion.metrics import Scorer, clip_scores, colour_fractions
from saeprobe.diffusion.pipeline import encode, generate, tokenize_prompts
from saeprobe.diffusion.steering import (
    GenSettings,
    discover_attributes,
    latent_stats,
    pick_latents,
    prompt_codes,
    run_steering,
    word_contrast,
)
from saeprobe.sae import load_sae
from saeprobe.world.clip import PROMPTS
from saeprobe.world.shapes import COLOURS

log = logging.getLogger(__name__)


def load_scorer(
    spec: Mapping[str, Any], world_clip_dir: str | Path, device: torch.device
) -> Scorer:
    """spec: {source: world} (the world CLIP) or {source: open_clip, name, weights}."""
    from saeprobe.backbones.openclip import load_open_clip_model

    if spec["source"] == "world":
        model, tokenizer = load_open_clip_model(
            {"source": "world", "weights": str(world_clip_dir)}, device
        )
    else:
        model, tokenizer = load_open_clip_model(dict(spec), device)
    return Scorer(model, tokenizer)


def world_vocabulary(vocab: Mapping[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    """({attribute: text}, {attribute: group}) over the world's in-distribution attributes."""
    texts, groups = {}, {}
    for group, names in (
        ("colour", vocab["colours"]),
        ("shape", vocab["train_shapes"]),
        ("superclass", list(vocab["superclasses"])),
        ("background", vocab["train_backgrounds"]),
    ):
        for name in names:
            texts[name] = PROMPTS[group].format(name)
            groups[name] = group
    return texts, groups


def world_colours(vocab: Mapping[str, Any]) -> dict[str, tuple[int, int, int]]:
    return {c: COLOURS[c] for c in vocab["colours"]}


def load_site(site_dir: str | Path) -> tuple[np.ndarray, pd.DataFrame, list[str]]:
    """(train activations (rows, d) memory-mapped, their token rows, the corpus prompts)."""
    site_dir = Path(site_dir)
    acts = np.load(site_dir / "train.npy", mmap_mode="r")
    tokens = pd.read_csv(site_dir / "tokens.csv", keep_default_na=False)
    tokens = tokens[tokens["split"] == "train"].reset_index(drop=True)
    prompts = json.loads((site_dir / "prompts.json").read_text())
    if len(tokens) != len(acts):
        raise ValueError(
            f"{site_dir}: tokens.csv has {len(tokens)} train rows, train.npy {len(acts)}"
        )
    return acts, tokens, prompts


def gen_settings(generation: Mapping[str, Any], task: Mapping[str, Any], layer: int) -> GenSettings:
    """The `diffusion.generation` section with the task's hook settings (tokens, branch, mode)."""
    return load_section(
        GenSettings,
        generation,
        "diffusion.generation",
        layer=layer,
        tokens=task["tokens"],
        branch=task["branch"],
        mode=task["mode"],
    )


def sae_id(sae_dir: Path) -> tuple[str, int]:
    """("{model}/{site}/{name}", layer) of results/saes/{model}/{site}/{name}."""
    model, site, name = sae_dir.parts[-3:]
    return f"{model}/{site}/{name}", int(site.split("_")[0][1:])


def run_steering_experiment(
    pipe: Any,
    sae_dirs: Sequence[Path],
    site_dirs: Mapping[str, Path],
    settings: Mapping[str, Any],
    generation: Mapping[str, Any],
    scorer: Scorer,
    colours: Mapping[str, Sequence[int]] | None,
    device: torch.device,
) -> tuple[pd.DataFrame, dict[str, Any], dict[str, np.ndarray]]:
    """Steering for every SAE. settings: `diffusion.steering`. Returns (table, chosen latents
    {sae: {concept: {latent, typical, contrast, text}}}, images of the first SAE)."""
    tables, chosen, first_images = [], {}, None
    for sae_dir in sae_dirs:
        name, layer = sae_id(sae_dir)
        sae = load_sae(sae_dir, "cpu")
        acts, tokens, prompts = load_site(site_dirs[sae_dir.parts[-2]])
        _, typical = latent_stats(sae, acts)
        codes = prompt_codes(sae, acts, tokens["prompt"].to_numpy(), len(prompts))
        words = list(settings["concepts"])
        contrast = word_contrast(codes, prompts, words)
        picks = pick_latents(contrast, words)
        concepts = {
            w: {
                "latent": picks[w],
                "typical": float(typical[picks[w]]),
                "contrast": float(contrast[i, picks[w]]),
                "text": settings["concepts"][w],
            }
            for i, w in enumerate(words)
        }
        log.info("%s: steering latents %s", name, {w: c["latent"] for w, c in concepts.items()})
        sae = sae.to(pipe.text_encoder.device)
        gen = gen_settings(generation, settings, layer)
        table, images = run_steering(
            pipe,
            sae,
            name,
            concepts,
            settings["prompts"],
            settings["seeds"],
            settings["strengths"],
            gen,
            scorer,
            colours,
        )
        tables.append(table)
        chosen[name] = concepts
        if first_images is None:
            first_images = images
    return pd.concat(tables, ignore_index=True), chosen, first_images or {}


def run_attribute_experiment(
    pipe: Any,
    sae_dirs: Sequence[Path],
    site_dirs: Mapping[str, Path],
    settings: Mapping[str, Any],
    generation: Mapping[str, Any],
    scorer: Scorer,
    vocabulary: Mapping[str, str],
    groups: Mapping[str, str] | None,
    concept_words: Sequence[str],
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Attribute discovery for the top `settings["top_n"]` latents (by activation mass) of every
    SAE. `concept_words`: words whose prompt contrast names each latent's input-side concept
    (column `input_concept`, for comparison with the discovered attribute)."""
    tables, first_images = [], None
    for sae_dir in sae_dirs:
        name, layer = sae_id(sae_dir)
        sae = load_sae(sae_dir, "cpu")
        acts, tokens, prompts = load_site(site_dirs[sae_dir.parts[-2]])
        mass, typical = latent_stats(sae, acts)
        latents = [int(i) for i in np.argsort(-mass)[: settings["top_n"]] if mass[i] > 0]
        codes = prompt_codes(sae, acts, tokens["prompt"].to_numpy(), len(prompts))
        contrast = word_contrast(codes, prompts, concept_words)
        sae = sae.to(pipe.text_encoder.device)
        gen = gen_settings(generation, settings, layer)
        table, images = discover_attributes(
            pipe,
            sae,
            name,
            latents,
            typical,
            settings["prompts"],
            settings["seeds"],
            settings["strength"],
            gen,
            scorer,
            vocabulary,
            settings["min_consistency"],
            settings["min_effect"],
        )
        table["activation_mass"] = mass[table["latent"].to_numpy()]
        best = contrast[:, table["latent"].to_numpy()]
        table["input_concept"] = [concept_words[i] for i in best.argmax(0)]
        table["input_contrast"] = best.max(0)
        if groups:
            table["group"] = table["attribute"].map(groups)
        tables.append(table)
        if first_images is None:
            first_images = images
    return pd.concat(tables, ignore_index=True), first_images or {}


@torch.no_grad()
def prompt_following(
    pipe: Any,
    scorer: Scorer,
    vocab: Mapping[str, Any],
    shapes: Sequence[str],
    seeds: Sequence[int],
    generation: Mapping[str, Any],
) -> tuple[pd.DataFrame, np.ndarray, list[str]]:
    """Generate "a {colour} {shape}" for every colour x shape x seed and check it.

    Returns (table: colour, shape, seed, colour_ok (nearest named colour of the chromatic pixels
    is the prompted one), shape_ok (world-CLIP zero-shot shape over the train shapes), images
    (len(shapes), len(colours), len(seeds), H, W, 3), colour names).
    """
    colours = list(vocab["colours"])
    prompts = [f"a {c} {s}" for s in shapes for c in colours for _ in seeds]
    seed_list = [int(x) for _ in shapes for _ in colours for x in seeds]
    ids, _ = tokenize_prompts(pipe, prompts)
    nids, _ = tokenize_prompts(pipe, [""] * len(prompts))
    images = generate(
        pipe,
        encode(pipe, ids),
        encode(pipe, nids),
        seed_list,
        generation["steps"],
        generation["guidance_scale"],
        generation["batch_size"],
        generation.get("height"),
    )
    frac = colour_fractions(images, world_colours(vocab))
    stacked = np.stack([frac[c] for c in colours], 1)
    shape_names = list(vocab["train_shapes"])
    text = scorer.texts([PROMPTS["shape"].format(s) for s in shape_names])
    pred_shape = clip_scores(scorer.images(images), text).argmax(1).numpy()
    rows = []
    for i, p in enumerate(prompts):
        _, colour, shape = p.split(" ")
        rows.append(
            {
                "colour": colour,
                "shape": shape,
                "seed": seed_list[i],
                "colour_ok": bool(
                    colours[int(stacked[i].argmax())] == colour and stacked[i].max() > 0
                ),
                "shape_ok": bool(shape_names[pred_shape[i]] == shape),
                "colour_fraction": float(frac[colour][i]),
            }
        )
    grid = images.reshape(len(shapes), len(colours), len(seeds), *images.shape[1:])
    return pd.DataFrame(rows), grid, colours
