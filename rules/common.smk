# Shared helpers: config validation, model/dataset lookups, target lists.
import os
import sys
from argparse import Namespace
from pathlib import Path

SRC = Path(workflow.basedir) / "src"
sys.path.insert(0, str(SRC))
# Scripts run in their own interpreter (and, on SLURM, on other nodes): let them import the library.
os.environ.update(
    PYTHONPATH=os.pathsep.join(p for p in (str(SRC), os.environ.get("PYTHONPATH")) if p)
)

from saeprobe.config import canonical, gpus_for, validate_config

validate_config(config, Path(workflow.basedir) / "schemas" / "config.schema.yaml")

ENV = "../envs/saeprobe.yaml"
GPUS = gpus_for(config)
WORLD_SPLITS = [
    "train",
    "test",
    "ood_shape",
    "ood_texture",
    "shift_outline",
    "shift_noise",
]
WORLD_MODEL_DIR = "results/models/world_clip"


wildcard_constraints:
    model="[A-Za-z0-9][A-Za-z0-9_-]*",
    dataset="[A-Za-z0-9][A-Za-z0-9_-]*",
    split="[a-z_]+",


def scaled_mem(mb: int):
    """A rule's memory request: `mb` per attempt for real models and datasets; the synthetic
    world's jobs need far less, so they ask for at most 8 GB per attempt."""
    base = min(mb, 8000) if uses_world() else mb
    return lambda wildcards, attempt: base * attempt


def model_spec(name: str) -> dict:
    """The model's config entry with the world CLIP's checkpoint path filled in."""
    spec = dict(config["models"][name])
    if spec["source"] == "world":
        spec.setdefault("weights", WORLD_MODEL_DIR)
    return canonical(spec)


def dataset_spec(name: str) -> dict:
    """The dataset's config entry with the world's root (or the class list's root) filled in."""
    spec = dict(config["datasets"][name])
    if spec["source"] == "world":
        spec.setdefault("root", "results/world")
    if "index_labels_from" in spec:
        spec["index_classes_root"] = config["datasets"][spec["index_labels_from"]][
            "root"
        ]
    return canonical(spec)


def uses_world() -> bool:
    return any(m["source"] == "world" for m in config["models"].values()) or any(
        d["source"] == "world" for d in config["datasets"].values()
    )


def extract_inputs(wildcards) -> dict:
    """Files an extraction needs that the pipeline itself makes (world images, world CLIP)."""
    inputs = {}
    if model_spec(wildcards.model)["source"] == "world":
        inputs["model"] = f"{WORLD_MODEL_DIR}/open_clip_model.safetensors"
    dataset = dataset_spec(wildcards.dataset)
    if dataset["source"] == "world":
        inputs["images"] = f"results/world/{dataset['split']}/images.npy"
        inputs["manifest"] = f"results/world/{dataset['split']}/manifest.csv"
    else:
        # ancient: a re-made check of an unchanged folder never reruns an extraction
        ready = [wildcards.dataset] + [
            dataset[k] for k in ("index_labels_from",) if k in dataset
        ]
        inputs["ready"] = [ancient(f"results/data/{d}.json") for d in ready]
    return inputs


def extract_settings() -> dict:
    """Extraction settings without the target lists, so adding a dataset reruns nothing else."""
    return {
        k: v for k, v in config["extract"].items() if k not in ("models", "datasets")
    }


def activation_dirs() -> list[str]:
    return [
        f"results/activations/{m}/{d}"
        for m in config["extract"]["models"]
        for d in config["extract"]["datasets"]
    ]


def world_targets() -> list[str]:
    """The world's images and its CLIP with its zero-shot table (nothing in the paper config)."""
    if not uses_world():
        return []
    return [
        "results/world/hierarchy.tsv",
        f"{WORLD_MODEL_DIR}/open_clip_model.safetensors",
        "results/tables/world_models.csv",
    ]


def sae_names() -> list[str]:
    return list(config["sae"]["sweep"]) if "sae" in config else []


def sae_dirs() -> list[str]:
    """One directory per trained SAE: results/saes/{model}/{site}/{name}."""
    if "sae" not in config:
        return []
    return [
        f"results/saes/{model}/{site}/{name}"
        for model, sites in config["sae"]["sites"].items()
        for site in sites
        for name in sae_names()
    ]


def quality_files() -> list[str]:
    return [f"{d}/quality.json" for d in sae_dirs()]


def eval_sae_inputs(wildcards) -> dict:
    """A site's SAEs with their held-out metrics, the training activations (the ablation mean)
    and, for downstream accuracy, the images and the model."""
    site_dir = f"results/saes/{wildcards.model}/{wildcards.site}"
    eval_dataset = config["sae"]["eval_dataset"]
    inputs = {
        "saes": [f"{site_dir}/{name}/sae.safetensors" for name in sae_names()],
        "metrics": [f"{site_dir}/{name}/metrics.json" for name in sae_names()],
        "train": f"results/activations/{wildcards.model}/{config['sae']['train_dataset']}",
    }
    wc = Namespace(model=wildcards.model, dataset=eval_dataset)
    inputs.update(extract_inputs(wc))
    if "vision" in config:
        inputs["hierarchy"] = hierarchy_file()  # class names for the zero-shot prompts
    elif uses_world():
        inputs["hierarchy"] = "results/world/hierarchy.tsv"
    return inputs


def all_targets() -> list[str]:
    targets = world_targets() + activation_dirs()
    if "sae" in config:
        targets += ["results/tables/sae_quality.csv", "results/figures/sae_quality.png"]
    return targets


# -- vision tasks (rules/vision.smk) --

VISION_TASKS = ["semantics", "ood_detection", "ood_generalization", "ontology"]


def vision_setting(task: str) -> dict:
    """A task's settings with schema defaults filled in, canonicalised."""
    return canonical(config["vision"].get(task, {}))


def hierarchy_file() -> str:
    if config["vision"]["hierarchy"]["source"] == "world":
        return "results/world/hierarchy.tsv"
    return "results/data/wordnet/hierarchy.tsv"


def namer_of(model: str) -> str | None:
    """The model whose text tower names `model`'s latents (itself if it has one)."""
    namers = config["vision"].get("semantics", {}).get("namers", {})
    if model in namers:
        return namers[model]
    return (
        model if config["models"][model]["source"] in ("world", "open_clip") else None
    )


def vision_inputs(task: str, datasets: list[str]):
    """Input function: the model's activations on `datasets`, its SAEs, and the hierarchy."""

    def inputs(wildcards) -> dict:
        model = wildcards.model
        out = {
            "activations": [f"results/activations/{model}/{d}" for d in datasets],
            "saes": [
                f"results/saes/{model}/{site}/{name}/sae.safetensors"
                for site in config["sae"]["sites"][model]
                for name in sae_names()
            ],
            "hierarchy": hierarchy_file(),
        }
        namer = namer_of(model)
        if task == "semantics" and namer is not None:
            out["namer"] = f"results/activations/{namer}/{datasets[0]}"
            out.update(extract_inputs(Namespace(model=namer, dataset=datasets[0])))
        return out

    return inputs


def vision_targets() -> list[str]:
    if "vision" not in config:
        return []
    figures = {
        "semantics": ["purity"],
        "ood_detection": ["auroc"],
        "ood_generalization": ["accuracy", "topk"],
        "ontology": ["coverage", "heights"],
    }
    targets = [f"results/tables/{task}.csv" for task in VISION_TASKS]
    targets += [
        f"results/figures/{task}_{name}.{ext}"
        for task, names in figures.items()
        for name in names
        for ext in ("png", "pdf")
    ]
    targets += [
        f"results/figures/semantics_grid_{model}.{ext}"
        for model in config["vision"]["models"]
        for ext in ("png", "pdf")
    ]
    return targets


# -- summary and report (rules/report.smk) --


def task_outputs() -> list[str]:
    """Every table and figure the configured tasks make."""
    tables = [
        t
        for t in all_targets()
        if t.startswith(("results/tables/", "results/figures/"))
    ]
    return tables + vision_targets() + diffusion_targets() + mllm_targets()


def report_targets() -> list[str]:
    return ["results/RESULTS.md", "results/figures/index.html"]
