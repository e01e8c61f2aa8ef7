"""Path and parameter helpers of rules/diffusion.smk (a rule file may not mix rules and defs).

Every function takes the validated Snakemake `config`. Layout: results/models/<model> (the
world's pipeline), results/data/prompts/<file> (paper corpus),
results/activations/<model>/<corpus>/<site>, results/saes/<model>/<site>/<name>,
results/tables/{steering,attributes,world_diffusion}.csv, results/figures/*.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from saeprobe.config import canonical

WORLD_CLIP_DIR = "results/models/world_clip"
FIGURES = ("steering_grid", "steering_effect", "steering_preservation", "attributes_grid")


def section(config: dict, key: str | None = None) -> Any:
    d = config["diffusion"]
    return canonical(d[key]) if key else d


def model(config: dict) -> str:
    return config["diffusion"]["model"]


def is_world(config: dict) -> bool:
    return config["diffusion"]["source"] == "world"


def pipeline_input(config: dict) -> list[str]:
    """The pipeline's model_index.json when the workflow trains it (world), else nothing."""
    return [f"results/models/{model(config)}/model_index.json"] if is_world(config) else []


def pipeline_source(config: dict) -> str:
    """The directory or hub id `DiffusionPipeline.from_pretrained` loads."""
    if is_world(config):
        return f"results/models/{model(config)}"
    return config["diffusion"]["hub_id"]


def corpus_name(config: dict) -> str:
    return config["diffusion"]["corpus"]["name"]


def corpus_inputs(config: dict) -> list[str]:
    corpus = config["diffusion"]["corpus"]
    if corpus["source"] == "world":
        return ["results/world/train/manifest.csv"]
    return [f"results/data/prompts/{corpus['file']}"]


def site_name(layer: int, tokens: str | Sequence[int]) -> str:
    """`L{layer}_{tokens}`: tokens "all", "eot", or positions joined by "-" (e.g. L10_p2-3)."""
    if isinstance(tokens, str):
        return f"L{layer}_{tokens}"
    return f"L{layer}_p" + "-".join(str(int(p)) for p in tokens)


def sites(config: dict) -> list[str]:
    """`L{layer}_{tokens}` per configured layer."""
    text = config["diffusion"]["text"]
    return [site_name(layer, text["tokens"]) for layer in text["layers"]]


def sae_names(config: dict) -> list[str]:
    return list(config["diffusion"]["sae"]["sweep"])


def sae_files(config: dict) -> list[str]:
    return [
        f"results/saes/{model(config)}/{site}/{name}/sae.safetensors"
        for site in sites(config)
        for name in sae_names(config)
    ]


def activation_files(config: dict) -> list[str]:
    return [
        f"results/activations/{model(config)}/{corpus_name(config)}/{site}/metadata.json"
        for site in sites(config)
    ]


def eval_inputs(config: dict) -> dict[str, Any]:
    """Inputs of the steering and attribute rules."""
    inputs: dict[str, Any] = {
        "pipeline": pipeline_input(config),
        "saes": sae_files(config),
        "activations": activation_files(config),
        "scorer": [],
    }
    if config["diffusion"]["scorer"]["source"] == "world":
        inputs["scorer"] = [f"{WORLD_CLIP_DIR}/open_clip_model.safetensors"]
    if is_world(config):
        inputs["vocab"] = "results/world/vocab.json"
    return inputs


def shared_params(config: dict) -> dict[str, Any]:
    """What steering and attribute discovery both depend on."""
    d = config["diffusion"]
    return canonical(
        {
            "model": d["model"],
            "source": pipeline_source(config),
            "world": is_world(config),
            "dtype": d["dtype"],
            "corpus": d["corpus"]["name"],
            "scorer": d["scorer"],
            "generation": d["generation"],
            "world_clip": WORLD_CLIP_DIR,
        }
    )


def targets(config: dict) -> list[str]:
    """Every table and figure of the diffusion stage ([] without a `diffusion:` section)."""
    if "diffusion" not in config:
        return []
    figures = list(FIGURES)
    out = ["results/tables/steering.csv", "results/tables/attributes.csv"]
    if is_world(config):
        figures.append("world_diffusion_samples")
        out.append("results/tables/world_diffusion.csv")
    out += [f"results/figures/{f}.{ext}" for f in figures for ext in ("png", "pdf")]
    return out
