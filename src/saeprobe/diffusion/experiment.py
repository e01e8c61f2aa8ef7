"""The steering and attribute-discovery experiments end to end, as the workflow runs them.

`load_scorer` builds the CLIP that scores images (world CLIP or an open_clip hub model);
`run_steering_experiment` / `run_attribute_experiment` loop over every (site, SAE) and return
the rows of `steering.csv` / `attributes.csv` plus the images the figures show.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from saeprobe.activations import ActivationStore
from saeprobe.config import load_section
from saeprobe.diffusion.gate import RENDER_THRESHOLD, concept_gate, gated, read_gate
from saeprobe.diffusion.hooks import latent_direction
from saeprobe.diffusion.metrics import Scorer, clip_scores, colour_fractions
from saeprobe.diffusion.pipeline import encode, generate, load_pipeline, tokenize_prompts
from saeprobe.diffusion.steering import (
    GenSettings,
    concept_directions,
    discover_attributes,
    discover_directions,
    latent_stats,
    pick_latents,
    projection_concepts,
    prompt_codes,
    random_directions,
    run_steering,
    scaled,
    steering_controls,
    word_contrast,
)
from saeprobe.sae import load_sae
from saeprobe.sae.io import CFG, read_json
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


def load_prompt_site(site_dir: str | Path) -> tuple[np.ndarray, np.ndarray, list[str], int]:
    """(activations (rows, d), each row's prompt index (rows,), the corpus prompts, layer) of a
    text-encoder store site."""
    store = ActivationStore(site_dir)
    prompts = store.examples()["prompt"].astype(str).tolist()
    return store.read_all(), np.asarray(store.example_index()), prompts, int(store.layer)


def sweep_saes(
    model: str, sae_dirs: Mapping[str, Sequence[str | Path]], activations: str | Path
) -> list[tuple[str, Path, Path]]:
    """(SAE id `{model}/{site}/{name}`, SAE directory, store site) for every SAE of every site.

    sae_dirs: {site: SAE directories}; activations: the store of the SAEs' training prompts.
    """
    out = []
    for site, dirs in sae_dirs.items():
        for d in dirs:
            name = read_json(Path(d) / CFG)["sae"]["name"]
            out.append((f"{model}/{site}/{name}", Path(d), Path(activations) / site))
    return out


@dataclass
class Experiment:
    """What steering and attribute discovery share: the pipeline, the CLIP scorer, the SAEs (id,
    directory, store site of their training prompts) and the world's vocabulary (world only)."""

    pipe: Any
    scorer: Scorer
    saes: list[tuple[str, Path, Path]]
    world: bool
    generation: Mapping[str, Any]
    vocab: dict[str, Any] | None = None
    gate: dict[str, bool] | None = None  # {concept: renderable}; None: every concept counts


def open_experiment(
    shared: Mapping[str, Any],
    activations: str | Path,
    vocab_file: str | Path | None,
    device: torch.device,
    gate_file: str | Path | None = None,
) -> Experiment:
    """Load what the diffusion tasks share. shared: the workflow's diffusion params (model,
    source, dtype, world, sae_dirs, scorer, generation, world_clip); activations: the store of
    the SAEs' training prompts; vocab_file: the world's vocab.json (world models only);
    gate_file: the generator's concept gate (`saeprobe.diffusion.gate`; None: no gate)."""
    return Experiment(
        pipe=load_pipeline(shared["source"], device, shared["dtype"], shared.get("revision")),
        scorer=load_scorer(shared["scorer"], shared["world_clip"], device),
        saes=sweep_saes(shared["model"], shared["sae_dirs"], activations),
        world=bool(shared["world"]),
        generation=shared["generation"],
        vocab=json.loads(Path(vocab_file).read_text()) if vocab_file else None,
        gate=read_gate(gate_file),
    )


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


def run_steering_experiment(
    pipe: Any,
    saes: Sequence[tuple[str, Path, Path]],
    settings: Mapping[str, Any],
    generation: Mapping[str, Any],
    scorer: Scorer,
    colours: Mapping[str, Sequence[int]] | None,
    device: torch.device,
    gate: Mapping[str, bool] | None = None,
    primary: str | None = None,
    seed: int = 0,
) -> tuple[pd.DataFrame, dict[str, Any], dict[str, np.ndarray], pd.DataFrame]:
    """Steering for every SAE. saes: from `sweep_saes`; settings: `diffusion.steering`; gate:
    {concept: renderable} (a concept the generator cannot draw is not steered; None: all are);
    primary: the pre-registered SAE name, whose controls also include the text directions
    (positive) and random latents (negative); every SAE gets norm-matched random directions.
    Returns (table, chosen latents {sae: {concept: {latent, typical, contrast, text}}}, images
    of the first SAE, controls: `steering_controls` rows of every SAE)."""
    tables, controls, chosen, first_images = [], [], {}, None
    for name, sae_dir, site_dir in saes:
        sae = load_sae(sae_dir, "cpu")
        acts, prompt_of_row, prompts, layer = load_prompt_site(site_dir)
        _, typical = latent_stats(sae, acts)
        codes = prompt_codes(sae, acts, prompt_of_row, len(prompts))
        words = gated(settings["concepts"], gate, f"{name} steering")
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
        gen = gen_settings(generation, settings, layer)
        table, images = run_steering(
            pipe,
            sae.to(pipe.text_encoder.device),
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
        k_max = int(np.argmax(settings["strengths"]))
        s_max = float(settings["strengths"][k_max])
        if s_max <= 0 or not concepts:
            continue
        sae = sae.to("cpu")
        is_primary = primary is None or name.rsplit("/", 1)[-1] == primary
        deltas = control_deltas(
            sae, concepts, s_max, typical, acts, prompt_of_row, prompts, seed, is_primary
        )
        controls.append(
            steering_controls(
                pipe,
                name,
                deltas,
                {w: images[w][k_max] for w in concepts},
                images["base"],
                settings["prompts"],
                settings["seeds"],
                gen,
                scorer,
                {w: c["text"] for w, c in concepts.items()},
                colours,
            ).assign(strength=s_max, primary=is_primary)
        )
    control_table = pd.concat(controls, ignore_index=True) if controls else pd.DataFrame()
    return pd.concat(tables, ignore_index=True), chosen, first_images or {}, control_table


def control_deltas(
    sae: Any,
    concepts: Mapping[str, Mapping[str, Any]],
    strength: float,
    typical: np.ndarray,
    acts: np.ndarray,
    prompt_of_row: np.ndarray,
    prompts: Sequence[str],
    seed: int,
    with_cases: bool,
) -> dict[str, dict[str, torch.Tensor]]:
    """{condition: {concept: raw direction (d,)}}, each norm-matched to the concept latent's
    change at `strength` (strength x typical x |W_dec / input_scale|): random_direction (one
    seeded isotropic draw per concept) and, when `with_cases`, text_direction (the concept's
    mean-activation difference, `concept_directions`; positive control) and random_latent (an
    alive latent picked for no concept, seeded; negative control)."""
    names = list(concepts)
    norms = {
        c: strength
        * concepts[c]["typical"]
        * float(latent_direction(sae, concepts[c]["latent"]).norm())
        for c in names
    }
    rand = random_directions(len(names), sae.W_dec.shape[1], seed)
    out = {"random_direction": {c: scaled(rand[i], norms[c]) for i, c in enumerate(names)}}
    if not with_cases:
        return out
    text = concept_directions(acts, prompt_of_row, prompts, names)
    out["text_direction"] = {c: scaled(text[c], norms[c]) for c in names if c in text}
    picked = {int(c["latent"]) for c in concepts.values()}
    pool = [i for i in range(len(typical)) if typical[i] > 0 and i not in picked]
    rng = np.random.default_rng([int(seed), 4111])
    draw = rng.choice(pool, size=len(names), replace=len(pool) < len(names)) if pool else []
    out["random_latent"] = {
        c: scaled(latent_direction(sae, int(r)), norms[c])
        for c, r in zip(names, draw, strict=False)
    }
    return out


def run_attribute_experiment(
    pipe: Any,
    saes: Sequence[tuple[str, Path, Path]],
    settings: Mapping[str, Any],
    generation: Mapping[str, Any],
    scorer: Scorer,
    vocabulary: Mapping[str, str],
    groups: Mapping[str, str] | None,
    concept_words: Sequence[str],
    gate: Mapping[str, bool] | None = None,
    primary: str | None = None,
    seed: int = 0,
) -> tuple[pd.DataFrame, dict[str, np.ndarray], pd.DataFrame]:
    """Attribute discovery for the top `settings["top_n"]` latents (by activation mass) of every
    SAE. `concept_words`: words whose prompt contrast names each latent's input-side concept
    (column `input_concept`, for comparison with the discovered attribute). gate: {concept:
    renderable}; only renderable attributes of the vocabulary can name a latent (None: all).
    primary: the judged SAE name (None: the first), whose site also runs the controls
    (`attribute_controls`). Returns (table, images of the first SAE, controls table)."""
    vocabulary = {a: t for a, t in vocabulary.items() if a in gated(vocabulary, gate, "attributes")}
    concept_words = [w for w in concept_words if w in vocabulary]
    tables, controls, first_images = [], [], None
    for name, sae_dir, site_dir in saes:
        sae = load_sae(sae_dir, "cpu")
        acts, prompt_of_row, prompts, layer = load_prompt_site(site_dir)
        mass, typical = latent_stats(sae, acts)
        latents = [int(i) for i in np.argsort(-mass)[: settings["top_n"]] if mass[i] > 0]
        codes = prompt_codes(sae, acts, prompt_of_row, len(prompts))
        contrast = word_contrast(codes, prompts, concept_words)
        gen = gen_settings(generation, settings, layer)
        table, images = discover_attributes(
            pipe,
            sae.to(pipe.text_encoder.device),
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
            groups,
        )
        sae = sae.to("cpu")
        table["activation_mass"] = mass[table["latent"].to_numpy()]
        best = contrast[:, table["latent"].to_numpy()]
        table["input_concept"] = [concept_words[i] for i in best.argmax(0)]
        table["input_contrast"] = best.max(0)
        if groups:
            table["group"] = table["attribute"].map(groups)
        tables.append(table)
        if first_images is None:
            first_images = images
        if (primary is None and not controls) or name.rsplit("/", 1)[-1] == primary:
            norm = float(
                np.median(
                    [
                        settings["strength"] * typical[i] * float(latent_direction(sae, i).norm())
                        for i in latents
                    ]
                )
            )
            controls.append(
                attribute_controls(
                    pipe,
                    name,
                    norm,
                    acts,
                    prompt_of_row,
                    prompts,
                    concept_words,
                    [w for w in concept_words if gate is None or gate.get(w, False)],
                    images["base"],
                    settings,
                    gen,
                    scorer,
                    vocabulary,
                    groups,
                    seed,
                )
            )
    control_table = pd.concat(controls, ignore_index=True) if controls else pd.DataFrame()
    return pd.concat(tables, ignore_index=True), first_images or {}, control_table


def attribute_controls(
    pipe: Any,
    sae_name: str,
    norm: float,
    acts: np.ndarray,
    prompt_of_row: np.ndarray,
    prompts: Sequence[str],
    concept_words: Sequence[str],
    positive_words: Sequence[str],
    base: np.ndarray,
    settings: Mapping[str, Any],
    gen: GenSettings,
    scorer: Scorer,
    vocabulary: Mapping[str, str],
    groups: Mapping[str, str] | None,
    seed: int,
) -> pd.DataFrame:
    """Discovery run on `settings["controls"]` directions of each kind (null: as many as the
    `top_n` latents examined, so that the controls' permutation tests have the measured case's
    power: k kept directions cannot reach p < 0.05 below k = 4), all of norm `norm` (the
    median change of the examined latents): positive = text-embedding directions of concepts
    drawn (seeded) from `positive_words` (the concepts the gate shows the generator renders;
    all concept words without a gate) (`concept_directions`; input concept: the concept by
    construction); negative = isotropic random directions (input concept: the latents' prompt
    contrast procedure on the directions' projections, `projection_concepts`).
    acts (rows, d), prompt_of_row (rows,): the site's corpus; base: unsteered images."""
    rng = np.random.default_rng([int(seed), 4127])
    text = concept_directions(acts, prompt_of_row, prompts, positive_words)
    eligible = [w for w in positive_words if w in text]
    count = int(settings.get("controls") or settings["top_n"])
    n = min(count, len(eligible))
    chosen = sorted(rng.choice(len(eligible), size=n, replace=False).tolist()) if n else []
    pos = [eligible[i] for i in chosen]
    rand = random_directions(count, acts.shape[1], seed + 1)
    args = (settings["prompts"], settings["seeds"], gen, scorer, vocabulary)
    thresholds = (settings["min_consistency"], settings["min_effect"])
    parts = []
    for case, names, dirs, inputs in (
        ("positive", pos, [text[w] for w in pos], pos),
        (
            "negative",
            [f"random_{i}" for i in range(len(rand))],
            list(rand),
            projection_concepts(acts, prompt_of_row, prompts, concept_words, rand)
            if concept_words
            else [""] * len(rand),
        ),
    ):
        if not names:
            continue
        deltas = [scaled(d, norm) for d in dirs]
        t = discover_directions(pipe, names, deltas, base, *args, *thresholds, groups)
        parts.append(t.assign(sae=sae_name, case=case, input_concept=inputs))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


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


@dataclass
class WorldSamples:
    """Does the world's diffusion model follow the prompted colour and shape?"""

    table: pd.DataFrame  # per image: colour, shape, seed, colour_ok, shape_ok, colour_fraction
    concepts: pd.DataFrame  # per colour and shape: the gate (saeprobe.diffusion.gate)
    grid: np.ndarray  # (len(shapes), len(colours), n_seeds, H, W, 3) uint8
    shapes: list[str]
    colours: list[str]
    summary: str  # the two rates against chance, one line


def world_samples(
    shared: Mapping[str, Any],
    vocab_file: str | Path,
    seed: int,
    device: torch.device,
    render_threshold: float = RENDER_THRESHOLD,
    n_seeds: int = 4,
) -> WorldSamples:
    """Generate "a {colour} {shape}" over every colour x train shape of the world x seeds
    seed.. seed + n_seeds - 1, check them (`prompt_following`) and gate the concepts (renderable:
    accuracy >= render_threshold).

    shared: the diffusion stage's shared params (source, dtype, world_clip, generation).
    """
    vocab = json.loads(Path(vocab_file).read_text())
    pipe = load_pipeline(shared["source"], str(device), shared["dtype"], shared.get("revision"))
    scorer = load_scorer({"source": "world"}, shared["world_clip"], device)
    shapes = list(vocab["train_shapes"])
    seeds = [seed + i for i in range(n_seeds)]
    table, grid, colours = prompt_following(
        pipe, scorer, vocab, shapes, seeds, shared["generation"]
    )
    concepts = concept_gate(table, render_threshold)
    summary = (
        f"colour followed: {table['colour_ok'].mean():.0%} (chance {1 / len(colours):.0%}); "
        f"shape recognised by the world CLIP: {table['shape_ok'].mean():.0%} "
        f"(chance {1 / len(shapes):.0%}); renderable: "
        f"{int(concepts['renderable'].sum())}/{len(concepts)} concepts"
    )
    log.info("%s", summary)
    return WorldSamples(table, concepts, grid, shapes, colours, summary)
