"""Config validation against the JSON schema, with messages that name the offending key."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator, ValidationError, validators

from saeprobe.sites import family_of, site_name


class ConfigError(ValueError):
    """A config value that does not match the schema; the message names every bad key."""


def _with_defaults(validator_class: type) -> type:
    """Extend a validator class so that validating fills in the schema's `default:` values."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema) -> Iterator[ValidationError]:
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if "default" in subschema and name not in instance:
                    instance[name] = _copy(subschema["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return validators.extend(validator_class, {"properties": set_defaults})


def _copy(value: Any) -> Any:
    return yaml.safe_load(yaml.safe_dump(value))


def key_path(error: ValidationError) -> str:
    """The dotted config key an error is about, e.g. `models.world_clip.layers[0]`."""
    parts: list[str] = []
    for part in error.absolute_path:
        if isinstance(part, int):
            parts.append(f"[{part}]")
        else:
            parts.append(("." if parts else "") + str(part))
    return "".join(parts) or "<top level>"


def describe(error: ValidationError) -> str:
    """One line per error: the key, what was expected and what was found."""
    key = key_path(error)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        where = f"'{key}'" if key != "<top level>" else "the top level"
        return f"unknown key(s) {extra} in {where}; allowed keys: {allowed}"
    if error.validator == "type":
        return (
            f"config key '{key}': expected {error.validator_value}, "
            f"got {type(error.instance).__name__} {error.instance!r}"
        )
    if error.validator == "enum":
        return (
            f"config key '{key}': expected one of {error.validator_value}, got {error.instance!r}"
        )
    if error.validator == "required":
        return f"config key '{key}': {error.message}"
    return f"config key '{key}': {error.message}"


def load_schema(schema_path: str | Path) -> dict:
    with open(schema_path) as fh:
        return yaml.safe_load(fh)


def validate_config(config: dict, schema_path: str | Path) -> dict:
    """Validate `config` in place against the schema, fill defaults, and return it.

    Raises ConfigError listing every problem, each naming its key and what was expected.
    """
    schema = load_schema(schema_path)
    validator = Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        lines = "\n".join(f"  - {describe(e)}" for e in errors)
        raise ConfigError(f"invalid config (checked against {Path(schema_path).name}):\n{lines}")
    _with_defaults(Draft202012Validator)(schema).validate(config)
    check_references(config)
    return config


def check_references(config: dict) -> None:
    """Cross-key checks the schema cannot express: names that must refer to defined entries."""
    problems: list[str] = []
    models = config.get("models", {})
    datasets = config.get("datasets", {})
    extract = config.get("extract", {})
    extracted = extract.get("datasets", {})
    for model, names in extracted.items():
        if model not in models:
            problems.append(
                f"config key 'extract.datasets.{model}': '{model}' is not defined under "
                f"'models' (defined: {sorted(models)})"
            )
            continue
        family = family_of(models[model]["source"])
        for i, name in enumerate(names):
            if name not in datasets:
                problems.append(
                    f"config key 'extract.datasets.{model}[{i}]': '{name}' is not defined "
                    f"under 'datasets' (defined: {sorted(datasets)})"
                )
            elif datasets[name]["source"] not in DATASET_SOURCES[family]:
                problems.append(
                    f"config key 'extract.datasets.{model}[{i}]': dataset '{name}' (source "
                    f"{datasets[name]['source']}) cannot feed a {family} model; expected a "
                    f"source of {list(DATASET_SOURCES[family])}"
                )
    sae = config.get("sae")
    if sae:
        problems += _sae_problems(sae, models, extracted)
    for name, spec in models.items():
        layers = spec.get("layers", [])
        if len(set(layers)) != len(layers):
            problems.append(f"config key 'models.{name}.layers': repeated layer in {layers}")
        if spec["source"] in ("open_clip", "hf", "diffusers", "llava") and "name" not in spec:
            problems.append(
                f"config key 'models.{name}.name': source {spec['source']} needs a hub name"
            )
    problems += _vision_problems(config)
    problems += _mllm_problems(config)
    problems += diffusion_problems(config)
    if problems:
        raise ConfigError("invalid config:\n" + "\n".join(f"  - {p}" for p in problems))


# Which dataset sources each model family can read.
DATASET_SOURCES = {
    "vision": ("world", "imagefolder"),
    "text_encoder": ("world_captions", "prompts"),
    "mllm": ("world_pairs", "coco"),
}


def stored_sites(spec: dict) -> set[str]:
    """The site names an extraction of a model spec writes (after schema defaults)."""
    family = family_of(spec["source"])
    if family == "vision":
        sites = {site_name(layer, tok) for layer in spec["layers"] for tok in spec["tokens"]}
        return sites | {"pooled"} if spec.get("pooled", True) else sites
    return {site_name(layer, spec.get("tokens", "all")) for layer in spec["layers"]}


def _sae_problems(sae: dict, models: dict, extracted: dict) -> list[str]:
    """Cross-references of `sae:`: sites that are extracted, datasets extracted for the model,
    k where the architecture needs it, overrides of models that have sites."""
    problems = []
    overrides = sae.get("overrides", {})
    for model, sites in sae["sites"].items():
        if model not in extracted:
            problems.append(
                f"config key 'sae.sites.{model}': not a model listed in 'extract.datasets'"
            )
            continue
        for key in ("train_dataset", "eval_dataset"):
            name = overrides.get(model, {}).get(key, sae[key])
            where = (
                f"sae.overrides.{model}.{key}" if key in overrides.get(model, {}) else f"sae.{key}"
            )
            if name not in extracted[model]:
                problems.append(
                    f"config key '{where}': '{name}' is not extracted for {model} (listed in "
                    f"'extract.datasets.{model}': {extracted[model]})"
                )
        stored = stored_sites(models[model])
        for i, site in enumerate(sites):
            if site not in stored:
                problems.append(
                    f"config key 'sae.sites.{model}[{i}]': site '{site}' is not extracted "
                    f"(extracted: {sorted(stored)}; see models.{model}.layers/tokens/pooled)"
                )
    for model in overrides:
        if model not in sae["sites"]:
            problems.append(f"config key 'sae.overrides.{model}': '{model}' has no sae.sites")
    sweeps = [("sae.sweep", sae["sweep"])] + [
        (f"sae.overrides.{m}.sweep", o["sweep"]) for m, o in overrides.items() if "sweep" in o
    ]
    for where, sweep in sweeps:
        for name, entry in sweep.items():
            if entry["arch"] in ("topk", "batchtopk", "matryoshka") and "k" not in entry:
                problems.append(f"config key '{where}.{name}.k': arch {entry['arch']} needs k")
    return problems


def _vision_problems(config: dict) -> list[str]:
    """Cross-references of the `vision` section: models with SAEs, extracted datasets, namers."""
    vision = config.get("vision")
    if not vision:
        return []
    problems = []
    models = config.get("models", {})
    extract = config.get("extract", {})
    sites = config.get("sae", {}).get("sites", {})
    for i, model in enumerate(vision["models"]):
        if model not in sites:
            problems.append(
                f"config key 'vision.models[{i}]': '{model}' has no SAE sites under 'sae.sites'"
            )
    datasets = [("train_dataset", vision["train_dataset"]), ("id_dataset", vision["id_dataset"])]
    for task, key in (("ood_detection", "ood_datasets"), ("ood_generalization", "test_datasets")):
        for i, name in enumerate(vision.get(task, {}).get(key, [])):
            datasets.append((f"{task}.{key}[{i}]", name))
    extracted = extract.get("datasets", {})
    for model in vision["models"]:
        for key, name in datasets:
            if name not in extracted.get(model, []):
                problems.append(
                    f"config key 'vision.{key}': '{name}' is not listed in "
                    f"'extract.datasets.{model}'"
                )
    for model, namer in vision.get("semantics", {}).get("namers", {}).items():
        spec = models.get(namer)
        if namer not in extracted or spec is None:
            problems.append(
                f"config key 'vision.semantics.namers.{model}': '{namer}' is not listed in "
                "'extract.datasets'"
            )
        elif not spec.get("pooled", True) or spec["source"] == "hf":
            problems.append(
                f"config key 'vision.semantics.namers.{model}': '{namer}' needs a text tower "
                "(source world or open_clip) and pooled: true"
            )
    grid_sae = vision.get("semantics", {}).get("grid_sae")
    if grid_sae is not None and grid_sae not in config.get("sae", {}).get("sweep", {}):
        problems.append(
            f"config key 'vision.semantics.grid_sae': '{grid_sae}' is not an SAE of 'sae.sweep'"
        )
    hierarchy = vision["hierarchy"]
    if hierarchy["source"] == "wordnet":
        for key in ("is_a", "words"):
            if key not in hierarchy:
                problems.append(
                    f"config key 'vision.hierarchy.{key}': needed for source wordnet "
                    "(url of the ImageNet WordNet file)"
                )
    return problems


def _mllm_problems(config: dict) -> list[str]:
    """Cross-references of the `mllm:` section: multimodal LLMs with SAE sites, world layers."""
    mllm = config.get("mllm")
    if not mllm:
        return []
    problems = []
    models = config.get("models", {})
    sites = config.get("sae", {}).get("sites", {})
    for i, name in enumerate(mllm["models"]):
        spec = models.get(name)
        if spec is None or family_of(spec["source"]) != "mllm":
            problems.append(
                f"config key 'mllm.models[{i}]': '{name}' is not a multimodal LLM under "
                "'models' (source world_llava or llava)"
            )
            continue
        if name not in sites:
            problems.append(f"config key 'mllm.models[{i}]': '{name}' has no 'sae.sites'")
        if spec["source"] == "world_llava":
            n_layers = mllm.get("world_llava", {}).get("layers", 2)
            bad = [layer for layer in spec["layers"] if layer >= n_layers]
            if bad:
                problems.append(
                    f"config key 'models.{name}.layers': {bad} beyond the world LLaVA's "
                    f"{n_layers} blocks (mllm.world_llava.layers)"
                )
    return problems


def diffusion_problems(config: dict) -> list[str]:
    """Cross-key checks of the `diffusion:` section (empty when it is absent)."""
    d = config.get("diffusion")
    if not d:
        return []
    problems: list[str] = []
    spec = config.get("models", {}).get(d["model"])
    if spec is None or family_of(spec["source"]) != "text_encoder":
        problems.append(
            f"config key 'diffusion.model': '{d['model']}' is not a text-to-image model under "
            "'models' (source world_diffusion or diffusers)"
        )
    elif d["model"] not in config.get("sae", {}).get("sites", {}):
        problems.append(f"config key 'diffusion.model': '{d['model']}' has no 'sae.sites'")
    for name, dataset in config.get("datasets", {}).items():
        if dataset["source"] == "prompts":
            for key in ("download", "file", "n_prompts"):
                if key not in dataset:
                    problems.append(
                        f"config key 'datasets.{name}.{key}': a prompts dataset needs it"
                    )
            if str(dataset.get("file", "")).endswith(".zip") and not dataset.get("member"):
                problems.append(
                    f"config key 'datasets.{name}.member': a zip corpus needs the JSON file"
                )
    if d["scorer"]["source"] == "open_clip" and not d["scorer"].get("name"):
        problems.append("config key 'diffusion.scorer.name': an open_clip scorer needs a name")
    steering = d.get("steering", {})
    for i, c in enumerate(steering.get("grid_concepts", [])):
        if c not in steering.get("concepts", {}):
            problems.append(
                f"config key 'diffusion.steering.grid_concepts[{i}]': '{c}' is not a concept "
                f"under 'diffusion.steering.concepts'"
            )
    return problems


def canonical(value: Any) -> Any:
    """Dicts with sorted keys, recursively (reordering keys in a config file reruns nothing)."""
    if isinstance(value, dict):
        return {key: canonical(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [canonical(item) for item in value]
    return value


def gpus_for(config: dict) -> int:
    """GPUs a GPU-capable job asks the scheduler for: one when the config says `device: cuda`."""
    return 1 if config.get("device") == "cuda" else 0
