"""Path and spec helpers of rules/mllm.smk (kept here: a rule file may not mix rules and defs).

Every function takes the validated Snakemake `config`. Layout: results/models/world_llava (the
world LLaVA), results/mllm/activations/{model}/{dataset}, results/mllm/saes/{model}/L{layer}/{name},
results/mllm/crossmodal/{model}/L{layer}/{name}, results/tables/crossmodal.csv + figures.
"""

from __future__ import annotations

from typing import Any

from saeprobe.config import canonical

WORLD_LLAVA_DIR = "results/models/world_llava"
FIGURES = ("crossmodal_modality_score", "crossmodal_concept_overlap", "crossmodal_shared_latents")


def section(config: dict, key: str | None = None) -> Any:
    mllm = config.get("mllm", {})
    return canonical(mllm.get(key, {})) if key else mllm


def models(config: dict) -> dict[str, dict]:
    return section(config).get("models", {})


def sae_name(config: dict) -> str:
    return section(config)["sae"]["name"]


def coco_root(config: dict) -> str:
    return section(config).get("coco", {}).get("root", "data/coco")


def uses_world(config: dict) -> bool:
    return any(m["source"] == "world" for m in models(config).values())


def model_spec(config: dict, name: str) -> dict:
    """The model's entry; a world model's `name` is the save_pretrained directory."""
    spec = dict(models(config)[name])
    if spec["source"] == "world":
        spec["name"] = WORLD_LLAVA_DIR
    return canonical(spec)


def dataset_spec(config: dict, name: str) -> dict:
    """The dataset's entry with its root filled in (the world, or mllm.coco.root)."""
    spec = dict(section(config)["datasets"][name])
    spec.setdefault("root", "results/world" if spec["source"] == "world" else coco_root(config))
    return canonical(spec)


def extract_inputs(config: dict, model: str, dataset: str) -> dict[str, str]:
    """Files an extraction needs that the pipeline makes (world LLaVA, world images, COCO)."""
    inputs = {}
    if model_spec(config, model)["source"] == "world":
        inputs["model"] = f"{WORLD_LLAVA_DIR}/model.safetensors"
    spec = dataset_spec(config, dataset)
    if spec["source"] == "world":
        inputs["images"] = f"results/world/{spec['split']}/images.npy"
        inputs["manifest"] = f"results/world/{spec['split']}/manifest.csv"
    else:
        root, split = spec["root"], spec["split"]
        inputs["captions"] = f"{root}/annotations/captions_{split}.json"
        inputs["instances"] = f"{root}/annotations/instances_{split}.json"
        inputs["images"] = f"{root}/{split}"
    return inputs


def activation_dir(config: dict, model: str, which: str) -> str:
    """which: train_dataset | eval_dataset."""
    return f"results/mllm/activations/{model}/{section(config)[which]}"


def sites(config: dict) -> list[str]:
    """'{model}/L{layer}/{sae name}' for every configured (model, layer)."""
    if "mllm" not in config:
        return []
    return [
        f"{m}/L{layer}/{sae_name(config)}"
        for m, spec in models(config).items()
        for layer in spec["layers"]
    ]


def eval_files(config: dict, name: str) -> list[str]:
    return [f"results/mllm/crossmodal/{site}/{name}" for site in sites(config)]


def targets(config: dict) -> list[str]:
    """Everything the crossmodal task writes; [] without an `mllm:` section."""
    if "mllm" not in config:
        return []
    out = ["results/tables/crossmodal.csv"]
    out += [f"results/figures/{f}.{ext}" for f in FIGURES for ext in ("png", "pdf")]
    if uses_world(config):
        out.append("results/tables/world_llava.csv")
    return out
