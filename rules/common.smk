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

from saeprobe.sites import family_of
from saeprobe.config import (
    COCO_SPLITS,
    THUMBNAIL_PX,
    canonical,
    coco_archive,
    gpus_for,
    thumbnail_stores,
    validate_config,
)

validate_config(config, Path(workflow.basedir) / "schemas" / "config.schema.yaml")

ENV = "../envs/saeprobe.yaml"
# Every file the workflow writes lies under this config's own root (the `results:` key, default
# `results`), so the demo, the smoke test and the paper run never overwrite each other and DVC
# versions each apart. User data in data/ (ImageNet, COCO, OOD sets) is shared by all configs.
RESULTS = config["results"]


def res(path: str) -> str:
    """`path` (e.g. "tables/x.csv") under this config's results root."""
    return f"{RESULTS}/{path}"


GPUS = gpus_for(config)
WORLD_SPLITS = [
    "train",
    "test",
    "ood_shape",
    "ood_texture",
    "shift_outline",
    "shift_noise",
    "ood_near",
    "ood_far",
    "id_fresh",
]
# The models the pipeline trains on the synthetic world, one folder each, in their libraries'
# own formats; a `models:` entry of a world source is loaded from here.
WORLD_DIR = res("world")
WORLD_MODEL_DIR = res("models/world_clip")
WORLD_DIFFUSION_DIR = res("models/world_diffusion")
WORLD_LLAVA_DIR = res("models/world_llava")
# the crossmodal claim's negative control: the same LLaVA trained on shuffled image-caption pairs
WORLD_LLAVA_SHUFFLED_DIR = res("models/world_llava_shuffled")
WORLD_MODEL_FILES = {
    "world": f"{WORLD_MODEL_DIR}/open_clip_model.safetensors",
    "world_diffusion": f"{WORLD_DIFFUSION_DIR}/model_index.json",
    "world_llava": f"{WORLD_LLAVA_DIR}/model.safetensors",
}
WORLD_DATASET_SOURCES = ("world", "world_captions", "world_pairs")


wildcard_constraints:
    model="[A-Za-z0-9][A-Za-z0-9_-]*",
    dataset="[A-Za-z0-9][A-Za-z0-9_-]*",
    split="[a-z_]+",
    site="(L[0-9]+_[A-Za-z0-9-]+|pooled)",


def scaled_mem(mb: int):
    """A rule's memory request: `mb` per attempt for real models and datasets; the synthetic
    world's jobs need far less, so they ask for at most 8 GB per attempt."""
    base = min(mb, 8000) if uses_world() else mb
    return lambda wildcards, attempt: base * attempt


def family(model: str) -> str:
    """vision, text_encoder or mllm."""
    return family_of(config["models"][model]["source"])


def untrained_world_dir(model: str) -> str:
    """The folder of an untrained world CLIP (models.<model>.untrained)."""
    return res(f"models/untrained/{model}")


def model_spec(name: str) -> dict:
    """The model's config entry with the folder of a world model filled in."""
    spec = dict(config["models"][name])
    if spec["source"] == "world":
        spec.setdefault(
            "weights",
            (
                untrained_world_dir(name)
                if spec.pop("untrained", False)
                else WORLD_MODEL_DIR
            ),
        )
    elif spec["source"] == "world_diffusion":
        spec["name"] = WORLD_DIFFUSION_DIR
    elif spec["source"] == "world_llava":
        spec["name"] = world_llava_dir(name)
    return canonical(spec)


def world_llava_dir(model: str) -> str:
    """The folder of a world_llava model: the shuffled-caption twin has its own."""
    shuffled = config["models"][model].get("shuffle_captions", False)
    return WORLD_LLAVA_SHUFFLED_DIR if shuffled else WORLD_LLAVA_DIR


def world_model_file(model: str) -> str | None:
    """The file a world model's extraction waits for: the file that marks it trained (or,
    for an untrained world CLIP, initialised); None for hub models."""
    spec = config["models"][model]
    if spec["source"] == "world" and spec.get("untrained"):
        return f"{untrained_world_dir(model)}/open_clip_model.safetensors"
    if spec["source"] == "world_llava":
        return f"{world_llava_dir(model)}/model.safetensors"
    return WORLD_MODEL_FILES.get(spec["source"])


def prompts_file(spec: dict) -> str:
    return f"{RESULTS}/data/prompts/{spec['file']}"


def prompt_download(file: str) -> dict:
    """The `download` entry of the prompt dataset whose corpus file is `file`."""
    for spec in config["datasets"].values():
        if spec["source"] == "prompts" and spec.get("file") == file:
            return canonical(spec["download"])
    raise ValueError(f"no prompt dataset downloads {file!r}")


def coco_config() -> dict:
    """The `mllm.coco` section (URLs and checksums of the COCO archives, their root)."""
    return canonical(config.get("mllm", {}).get("coco", {}))


def coco_root() -> str:
    return coco_config().get("root", "data/coco")


def dataset_spec(name: str) -> dict:
    """The dataset's entry with its name and files filled in (the world's root, a prompt
    corpus's path, COCO's root, the class list's root)."""
    spec = dict(config["datasets"][name], name=name)
    if spec["source"] in WORLD_DATASET_SOURCES:
        spec.setdefault("root", WORLD_DIR)
    elif spec["source"] == "prompts":
        spec["path"] = prompts_file(spec)
    elif spec["source"] == "coco":
        spec.setdefault("root", coco_root())
    if "index_labels_from" in spec:
        spec["index_classes_root"] = config["datasets"][spec["index_labels_from"]][
            "root"
        ]
    return canonical(spec)


def uses_world() -> bool:
    return any(
        m["source"] in WORLD_MODEL_FILES for m in config["models"].values()
    ) or any(d["source"] in WORLD_DATASET_SOURCES for d in config["datasets"].values())


def dataset_inputs(name: str) -> dict:
    """Files a dataset is read from that the pipeline itself makes or fetches."""
    spec = dataset_spec(name)
    source = spec["source"]
    if source in WORLD_DATASET_SOURCES:
        split = f"{WORLD_DIR}/{spec['split']}"
        return {"images": f"{split}/images.npy", "manifest": f"{split}/manifest.csv"}
    if source == "prompts":
        return {"corpus": spec["path"]}
    if source == "coco":
        root, split = spec["root"], spec["split"]
        return {
            "captions": f"{root}/annotations/captions_{split}.json",
            "instances": f"{root}/annotations/instances_{split}.json",
            "coco_images": f"{root}/{split}",
        }
    # ancient: a re-made check of an unchanged folder never reruns an extraction
    ready = [name] + [spec[k] for k in ("index_labels_from",) if k in spec]
    return {"ready": [ancient(f"{RESULTS}/data/{d}.json") for d in ready]}


def extract_inputs(wildcards) -> dict:
    """Files an extraction needs that the pipeline itself makes (world models and data)."""
    inputs = dataset_inputs(wildcards.dataset)
    model_file = world_model_file(wildcards.model)
    if model_file is not None:
        inputs["model"] = model_file
    return inputs


THUMBNAIL_STORES = thumbnail_stores(config)


def extract_settings(model: str, dataset: str) -> dict:
    """Extraction settings of one store without the target lists, so adding a dataset reruns
    nothing else; a model's own batch_size wins; thumbnail_px only where thumbnails are kept
    (extract.thumbnails), so the other stores' settings stay as they were."""
    skip = ("datasets", "thumbnails")
    settings = {k: v for k, v in config["extract"].items() if k not in skip}
    settings["batch_size"] = config["models"][model].get(
        "batch_size", settings["batch_size"]
    )
    if (model, dataset) in THUMBNAIL_STORES:
        settings["thumbnail_px"] = THUMBNAIL_PX
    return settings


def activation_dir(model: str, dataset: str) -> str:
    return f"{RESULTS}/activations/{model}/{dataset}"


def activation_dirs() -> list[str]:
    return [
        activation_dir(m, d)
        for m, datasets in config["extract"]["datasets"].items()
        for d in datasets
    ]


def world_targets() -> list[str]:
    """The world's images, its CLIP and every other world model the config uses: all of it in
    {results}/world and {results}/models, DVC's `world` group (nothing in the paper config).
    """
    if not uses_world():
        return []
    files = {WORLD_MODEL_FILES["world"]}
    files |= {world_model_file(m) for m in config["models"]} - {None}
    return [f"{WORLD_DIR}/hierarchy.tsv"] + sorted(files)


def data_targets() -> list[str]:
    """What the pipeline downloads or prepares in {results}/data, DVC's `data` group: the
    checked dataset records, prompt corpora and the WordNet hierarchy (nothing in the world).
    """
    files = []
    for d in sorted({d for ds in config["extract"]["datasets"].values() for d in ds}):
        inputs = dataset_inputs(d)
        files += inputs.get("ready", []) + [
            inputs[k] for k in ("corpus",) if k in inputs
        ]
    if "vision" in config and config["vision"]["hierarchy"]["source"] == "wordnet":
        files.append(hierarchy_file())
    return files


# -- SAEs (rules/sae.smk): sae.train / sae.sweep, with sae.overrides per model --


def sae_override(model: str) -> dict:
    return config["sae"].get("overrides", {}).get(model, {})


def sae_dataset(model: str, which: str) -> str:
    """which: train_dataset | eval_dataset, for this model."""
    return sae_override(model).get(which, config["sae"][which])


def sae_train(model: str) -> dict:
    return canonical({**config["sae"]["train"], **sae_override(model).get("train", {})})


def sae_sweep(model: str) -> dict:
    """The model's SAE sweep; an untrained control without a sweep of its own trains only
    the primary SAE of the model it controls (the one the verdict compares it with)."""
    override = sae_override(model)
    measured = controlled_by(model)
    if "sweep" not in override and measured is not None:
        name = sae_primary(measured)
        return canonical({name: sae_sweep(measured)[name]})
    return canonical(override.get("sweep", config["sae"]["sweep"]))


def controlled_by(model: str) -> str | None:
    """The vision model whose untrained control `model` is (None if it is none's)."""
    return next((m for m, c in untrained_controls().items() if c == model), None)


def sae_names(model: str) -> list[str]:
    return sorted(sae_sweep(model))


def sae_primary(model: str) -> str:
    """The pre-registered SAE of this model's sweep that the verdicts judge."""
    override = sae_override(model)
    if "primary" in override:
        return override["primary"]
    if "sweep" not in override and controlled_by(model) is not None:
        return sae_primary(controlled_by(model))
    if "sweep" not in override and "primary" in config["sae"]:
        return config["sae"]["primary"]
    return sae_names(model)[0]  # a sweep of one (checked by saeprobe.config)


def untrained_controls() -> dict[str, str]:
    """{vision model: its untrained copy} (vision.semantics.untrained_controls)."""
    return config.get("vision", {}).get("semantics", {}).get("untrained_controls", {})


def sae_sites() -> list[tuple[str, str]]:
    """Every (model, site) that trains a sweep."""
    if "sae" not in config:
        return []
    return [(m, s) for m, sites in config["sae"]["sites"].items() for s in sites]


def judged_sae_sites() -> list[tuple[str, str]]:
    """The (model, site)s whose SAEs are evaluated and judged: all but the controls' (an
    untrained copy of a vision model, a shuffled-caption multimodal LLM)."""
    controls = set(untrained_controls().values())
    controls |= set(config.get("mllm", {}).get("negatives", {}).values())
    return [(m, s) for m, s in sae_sites() if m not in controls]


def sae_site_dir(model: str, site: str) -> str:
    return f"{RESULTS}/saes/{model}/{site}"


def sweep_file(model: str, site: str) -> str:
    """Written last by train_saes: the sweep of (model, site) is complete."""
    return f"{sae_site_dir(model, site)}/sweep.json"


def sae_dirs(model: str, site: str) -> list[str]:
    """One directory per SAE of the sweep: {results}/saes/{model}/{site}/{name}."""
    return [f"{sae_site_dir(model, site)}/{name}" for name in sae_names(model)]


def sae_dir_map(model: str, site: str) -> dict[str, str]:
    """{SAE name: directory} of the sweep of (model, site)."""
    return dict(zip(sae_names(model), sae_dirs(model, site)))


def sweep_files(models: list[str] | None = None) -> list[str]:
    return [sweep_file(m, s) for m, s in sae_sites() if models is None or m in models]


def quality_files() -> list[str]:
    return [f"{sae_site_dir(m, s)}/quality.csv" for m, s in judged_sae_sites()]


def eval_sae_inputs(wildcards) -> dict:
    """A site's sweep with its training activations (PCA baseline, controls, the ablation
    mean) and held-out activations and, for a vision model's downstream accuracy, the images
    and the model."""
    model, site = wildcards.model, wildcards.site
    eval_dataset = sae_dataset(model, "eval_dataset")
    inputs = {
        "sweep": sweep_file(model, site),
        "train": activation_dir(model, sae_dataset(model, "train_dataset")),
        "held_out": activation_dir(model, eval_dataset),
    }
    if family(model) == "vision":
        inputs.update(extract_inputs(Namespace(model=model, dataset=eval_dataset)))
        if "vision" in config:
            inputs["hierarchy"] = (
                hierarchy_file()
            )  # class names for the zero-shot prompts
        elif uses_world():
            inputs["hierarchy"] = f"{WORLD_DIR}/hierarchy.tsv"
    return inputs


def all_targets() -> list[str]:
    targets = world_targets() + activation_dirs()
    if uses_world():
        targets.append(
            res("tables/world_models.csv")
        )  # the world CLIP's zero-shot accuracy
    if "sae" in config:
        targets += [res("tables/sae_quality.csv"), res("figures/sae_quality.png")]
    return targets


# -- vision tasks (rules/vision.smk) --

VISION_TASKS = ["semantics", "ood_detection", "ood_generalization", "ontology"]


def vision_setting(task: str) -> dict:
    """A task's settings with schema defaults filled in, canonicalised."""
    return canonical(config["vision"].get(task, {}))


def ood_controls() -> list[str]:
    """The OOD detection controls that are configured: far-OOD and fresh in-distribution sets."""
    settings = config["vision"].get("ood_detection", {})
    return [settings[k] for k in ("far_dataset", "fresh_id_dataset") if k in settings]


def hierarchy_file() -> str:
    if config["vision"]["hierarchy"]["source"] == "world":
        return f"{WORLD_DIR}/hierarchy.tsv"
    return res("data/wordnet/hierarchy.tsv")


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
            "activations": [f"{RESULTS}/activations/{model}/{d}" for d in datasets],
            "saes": [sweep_file(model, site) for site in config["sae"]["sites"][model]],
            "hierarchy": hierarchy_file(),
        }
        control = untrained_controls().get(model)
        if task == "semantics" and control is not None:
            out["control_activations"] = activation_dir(control, datasets[0])
            out["control_saes"] = [
                sweep_file(control, site) for site in config["sae"]["sites"][model]
            ]
        namer = namer_of(model)
        if task == "semantics" and namer is not None:
            out["namer"] = f"{RESULTS}/activations/{namer}/{datasets[0]}"
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
    targets = [f"{RESULTS}/tables/{task}.csv" for task in VISION_TASKS]
    targets += [
        f"{RESULTS}/figures/{task}_{name}.{ext}"
        for task, names in figures.items()
        for name in names
        for ext in ("png", "pdf")
    ]
    targets += [
        f"{RESULTS}/figures/semantics_grid_{model}.{ext}"
        for model in config["vision"]["models"]
        for ext in ("png", "pdf")
    ]
    return targets


# -- diffusion tasks (rules/diffusion.smk) --

DIFFUSION_FIGURES = (
    "steering_grid",
    "steering_effect",
    "steering_preservation",
    "steering_controls",
    "attributes_grid",
)


def diffusion_model() -> str:
    return config["diffusion"]["model"]


def diffusion_is_world() -> bool:
    return config["models"][diffusion_model()]["source"] == "world_diffusion"


def diffusion_inputs() -> dict:
    """Inputs of the steering and attribute rules: the pipeline, the text-encoder SAEs and the
    activations of their training prompts (which pick the latents), the scorer, the vocabulary.
    """
    model = diffusion_model()
    inputs = {
        "pipeline": (
            [WORLD_MODEL_FILES["world_diffusion"]] if diffusion_is_world() else []
        ),
        "sweeps": sweep_files([model]),
        "activations": activation_dir(model, sae_dataset(model, "train_dataset")),
        "scorer": [],
    }
    if config["diffusion"]["scorer"]["source"] == "world":
        inputs["scorer"] = [WORLD_MODEL_FILES["world"]]
    if diffusion_is_world():
        inputs["vocab"] = f"{WORLD_DIR}/vocab.json"
        # which concepts the generator can draw (no gate for a hub model: all count)
        inputs["gate"] = res("tables/world_diffusion_concepts.csv")
    return inputs


def diffusion_params() -> dict:
    """What steering and attribute discovery both depend on."""
    d = config["diffusion"]
    model = diffusion_model()
    spec = model_spec(model)
    return canonical(
        {
            "model": model,
            "source": spec["name"],
            "revision": spec.get("revision"),
            "dtype": spec["dtype"],
            "world": diffusion_is_world(),
            "sae_dirs": {
                site: sae_dirs(model, site) for site in config["sae"]["sites"][model]
            },
            "scorer": d["scorer"],
            "generation": d["generation"],
            "world_clip": WORLD_MODEL_DIR,
        }
    )


def diffusion_targets() -> list[str]:
    """Every table and figure of the diffusion stage ([] without a `diffusion:` section)."""
    if "diffusion" not in config:
        return []
    figures = list(DIFFUSION_FIGURES)
    out = [res("tables/steering.csv"), res("tables/attributes.csv")]
    if diffusion_is_world():
        figures.append("world_diffusion_samples")
        out += [
            res("tables/world_diffusion.csv"),
            res("tables/world_diffusion_concepts.csv"),
        ]
    out += [f"{RESULTS}/figures/{f}.{ext}" for f in figures for ext in ("png", "pdf")]
    return out


# -- multimodal LLM (rules/mllm.smk) --

MLLM_FIGURES = (
    "crossmodal_modality_score",
    "crossmodal_concept_overlap",
    "crossmodal_shared_latents",
)


def crossmodal_negatives() -> dict[str, str]:
    """{measured model: its shuffled-caption twin} (mllm.negatives)."""
    return dict(config.get("mllm", {}).get("negatives", {}))


def crossmodal_primary() -> dict[str, str]:
    """{model: its pre-registered SAE} of the measured models and their negatives."""
    models = config.get("mllm", {}).get("models", [])
    return {m: sae_primary(m) for m in [*models, *crossmodal_negatives().values()]}


def crossmodal_sites() -> list[tuple[str, str, str]]:
    """(model, site, sae name) of every SAE the crossmodal task evaluates: each measured
    model's sweep and its negative's primary SAE."""
    if "mllm" not in config:
        return []
    measured = [
        (m, s, name)
        for m in config["mllm"]["models"]
        for s in config["sae"]["sites"][m]
        for name in sae_names(m)
    ]
    negatives = [
        (n, s, sae_primary(n))
        for n in crossmodal_negatives().values()
        for s in config["sae"]["sites"][n]
    ]
    return measured + negatives


def crossmodal_text_only(model: str) -> str | None:
    """The text-only dataset of a measured model's evaluation captions (mllm.text_only)."""
    return config.get("mllm", {}).get("text_only", {}).get(model)


def crossmodal_eval_inputs(wildcards) -> dict:
    """The SAE sweep, the evaluation store and, where configured, its text-only twin."""
    model = wildcards.model
    inputs = {
        "sweep": res(f"saes/{model}/{wildcards.site}/sweep.json"),
        "acts": activation_dir(model, sae_dataset(model, "eval_dataset")),
    }
    text_only = crossmodal_text_only(model)
    if text_only is not None:
        inputs["text_only"] = activation_dir(model, text_only)
    return inputs


def crossmodal_datasets() -> dict:
    """{model: {train, eval}}: the datasets each crossmodal model's SAEs are trained and
    evaluated on (for the report's captions)."""
    return {
        m: {
            "train": sae_dataset(m, "train_dataset"),
            "eval": sae_dataset(m, "eval_dataset"),
        }
        for m in config.get("mllm", {}).get("models", [])
    }


def crossmodal_dir(model: str, site: str, name: str) -> str:
    return f"{RESULTS}/crossmodal/{model}/{site}/{name}"


def crossmodal_files(name: str) -> list[str]:
    return [f"{crossmodal_dir(*key)}/{name}" for key in crossmodal_sites()]


def mllm_targets() -> list[str]:
    """Everything the crossmodal task writes; [] without an `mllm:` section."""
    if "mllm" not in config:
        return []
    out = [res("tables/crossmodal.csv")]
    out += [
        f"{RESULTS}/figures/{f}.{ext}" for f in MLLM_FIGURES for ext in ("png", "pdf")
    ]
    if any(
        config["models"][m]["source"] == "world_llava" for m in config["mllm"]["models"]
    ):
        out.append(res("tables/world_llava.csv"))
    return out


# -- summary and report (rules/report.smk) --


def evidence_files() -> list[str]:
    """Every evidence table (saeprobe.claims) the configured tasks hand in."""
    out = [res(f"evidence/reconstruction/{m}/{s}.csv") for m, s in judged_sae_sites()]
    if "vision" in config:
        out += [
            res(f"evidence/{task}/{model}.csv")
            for task in VISION_TASKS
            for model in config["vision"]["models"]
        ]
    if "diffusion" in config:
        out += [res("evidence/steering.csv"), res("evidence/attributes.csv")]
    if "mllm" in config:
        out.append(res("evidence/crossmodal.csv"))
    return out


def task_outputs() -> list[str]:
    """Every table and figure the configured tasks make."""
    tables = [
        t for t in all_targets() if t.startswith((res("tables/"), res("figures/")))
    ]
    return tables + vision_targets() + diffusion_targets() + mllm_targets()


def report_targets() -> list[str]:
    return [res("RESULTS.md"), res("figures/index.html")]


# -- the latent atlas (rules/atlas.smk) --


def atlas_saes() -> list[dict]:
    """Every SAE of the config (controls included), with the store and dataset it is read on."""
    out = []
    for model, site in sae_sites():
        dataset = sae_dataset(model, "eval_dataset")
        for name, sae_dir in sae_dir_map(model, site).items():
            out.append(
                {
                    "model": model,
                    "site": site,
                    "name": name,
                    "family": family(model),
                    "sae_dir": sae_dir,
                    "store": f"{activation_dir(model, dataset)}/{site}",
                    "dataset": dataset,
                    "dataset_spec": dataset_spec(dataset),
                }
            )
    return canonical(out)


def atlas_tables() -> dict:
    """{task: the files whose per-latent rows the atlas shows} of the configured tasks."""
    tables = {}
    if "vision" in config:
        models = config["vision"]["models"]
        tables["semantics"] = [res(f"vision/semantics/{m}.csv") for m in models]
        tables["ood_detection"] = [
            res(f"vision/ood_detection/{m}_latents.csv") for m in models
        ]
        tables["ood_generalization"] = [
            res(f"vision/ood_generalization/{m}_latents.csv") for m in models
        ]
        tables["ontology"] = [res(f"vision/ontology/{m}_units.csv") for m in models]
    if "diffusion" in config:
        tables["steering"] = [res("tables/steering.csv")]
        tables["attributes"] = [res("tables/attributes.csv")]
    return tables


def atlas_crossmodal() -> dict[str, str]:
    """{SAE id: its crossmodal latents.csv}."""
    return {
        f"{model}/{site}/{name}": f"{crossmodal_dir(model, site, name)}/latents.csv"
        for model, site, name in crossmodal_sites()
    }


def atlas_inputs(wildcards) -> dict:
    inputs = {
        "sweeps": sweep_files(),
        "stores": sorted({os.path.dirname(s["store"]) for s in atlas_saes()}),
        "tables": [f for files in atlas_tables().values() for f in files],
        "crossmodal": list(atlas_crossmodal().values()),
        "world_images": sorted(
            {
                dataset_inputs(s["dataset"])["images"]
                for s in atlas_saes()
                if s["dataset_spec"]["source"] == "world"
            }
        ),
    }
    if "diffusion" in config:
        inputs["strips"] = res("diffusion/steering_strips.npz")
    return inputs


def atlas_targets() -> list[str]:
    return [res("atlas/index.html")] if sae_sites() else []
