"""Config validation against the JSON schema, with messages that name the offending key.

The schema (schemas/config.schema.yaml) is the one definition of every setting's type, range and
default; `validate_config` checks a config against it, fills the defaults and runs the cross-key
rules the schema cannot say (`check_references`). `load_section` then turns one validated section
into its typed, frozen dataclass and rejects keys the dataclass does not know.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml
from jsonschema import Draft202012Validator, ValidationError, validators

from saeprobe.sites import family_of, site_name

T = TypeVar("T")


class ConfigError(ValueError):
    """A config value that does not match the schema; the message names every bad key."""


def load_section(cls: type[T], data: Mapping[str, Any] | None, key: str, **outside: Any) -> T:
    """The dataclass `cls` built from the config section `data` found at the dotted key `key`.

    `data` is a section as `validate_config` leaves it (defaults filled); keys it leaves out take
    the dataclass's defaults (library use and tests pass partial mappings). `outside` sets fields
    that do not come from the section (the global seed and device, a job's threads); the section
    may not set them too. Values are converted to the field types: lists to tuples (recursively),
    integers to floats; a class may convert further in a classmethod `_from_section(values, key)`.

    Raises ConfigError naming the full dotted key: for a section that is not a mapping, for keys
    that are not fields of `cls` (listing the allowed keys), and for a field without a default
    that is not set.
    """
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"config key '{key}': expected a mapping, got {data!r}")
    names = [f.name for f in dataclasses.fields(cls) if f.init]  # type: ignore[arg-type]
    bad_outside = sorted(set(outside) - set(names))
    if bad_outside:
        raise TypeError(f"{cls.__name__} has no field(s) {bad_outside}")
    allowed = [n for n in names if n not in outside]
    unknown = sorted(set(data) - set(allowed), key=str)
    if unknown:
        raise ConfigError(
            f"unknown key(s) {[f'{key}.{k}' for k in unknown]} in '{key}'; "
            f"allowed keys: {sorted(allowed)}"
        )
    values = {**data, **outside}
    missing = [
        f.name
        for f in dataclasses.fields(cls)  # type: ignore[arg-type]
        if f.init
        and f.name not in values
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(
            f"config key(s) {[f'{key}.{k}' for k in missing]}: required, not set in '{key}'"
        )
    hook = getattr(cls, "_from_section", None)
    if hook is not None:
        values = hook(values, key)
    hints = typing.get_type_hints(cls)
    values = {name: _convert(hints.get(name, Any), value) for name, value in values.items()}
    try:
        return cls(**values)
    except TypeError as err:  # a field that rejects its value's type
        raise ConfigError(f"config key '{key}': {err}") from err


def load_sections(
    classes: tuple[type, ...], data: Mapping[str, Any] | None, key: str, **outside: Any
) -> tuple[Any, ...]:
    """One section read into several dataclasses: each key goes to the class with that field.

    As `load_section`; `outside` values go to every class that has the field. Unknown keys (in
    none of the classes) raise ConfigError naming them and listing the keys of all classes.
    """
    data = {} if data is None else data
    if not isinstance(data, Mapping):
        raise ConfigError(f"config key '{key}': expected a mapping, got {data!r}")
    fields_of = [{f.name for f in dataclasses.fields(c) if f.init} for c in classes]
    allowed = set().union(*fields_of) - set(outside)
    unknown = sorted(set(data) - allowed, key=str)
    if unknown:
        raise ConfigError(
            f"unknown key(s) {[f'{key}.{k}' for k in unknown]} in '{key}'; "
            f"allowed keys: {sorted(allowed)}"
        )
    return tuple(
        load_section(
            cls,
            {k: v for k, v in data.items() if k in names},
            key,
            **{k: v for k, v in outside.items() if k in names},
        )
        for cls, names in zip(classes, fields_of, strict=True)
    )


class FromConfig:
    """Mixin: `Cls.from_dict(section, key=None, **outside)` is `load_section(Cls, ...)`, with
    `key` defaulting to the class's `config_key`."""

    config_key: ClassVar[str]

    @classmethod
    def from_dict(
        cls: type[T], data: Mapping[str, Any] | None, key: str | None = None, **outside: Any
    ) -> T:
        return load_section(cls, data, key or cls.config_key, **outside)  # type: ignore[attr-defined]


def _convert(tp: Any, value: Any) -> Any:
    """`value` (plain YAML/JSON data) as the annotation `tp` wants it: tuples, floats."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is float:
        return float(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        options = [a for a in args if a is not type(None)]
        return _convert(options[0], value) if len(options) == 1 else value
    if origin is tuple and isinstance(value, list | tuple):
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v) for v in value)
        if len(args) == len(value):
            return tuple(_convert(a, v) for a, v in zip(args, value, strict=True))
        return tuple(value)
    return value


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
        if key == "<top level>":
            return f"unknown key(s) {extra} at the top level; allowed keys: {allowed}"
        dotted = [f"{key}.{name}" for name in extra]
        return f"unknown key(s) {dotted} in '{key}'; allowed keys: {allowed}"
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
    problems += _thumbnail_problems(config)
    for name, spec in models.items():
        layers = spec.get("layers", [])
        if len(set(layers)) != len(layers):
            problems.append(f"config key 'models.{name}.layers': repeated layer in {layers}")
        if "revision" in spec and spec["source"] not in ("hf", "diffusers", "llava"):
            problems.append(
                f"config key 'models.{name}.revision': a hub revision applies to sources hf, "
                f"diffusers and llava, not {spec['source']}"
                + (
                    " (pin open_clip weights with a checksummed file in weights)"
                    if spec["source"] == "open_clip"
                    else ""
                )
            )
        if spec.get("untrained") and spec["source"] not in UNTRAINED_SOURCES:
            problems.append(
                f"config key 'models.{name}.untrained': only a vision model (source "
                f"{' / '.join(UNTRAINED_SOURCES)}) has an untrained copy, not source "
                f"{spec['source']}"
            )
        if spec["source"] in ("open_clip", "hf", "diffusers", "llava") and "name" not in spec:
            problems.append(
                f"config key 'models.{name}.name': source {spec['source']} needs a hub name"
            )
    problems += world_problems(config)
    problems += model_dataset_problems(config)
    problems += _vision_problems(config)
    problems += _mllm_problems(config)
    problems += _text_only_problems(config)
    problems += diffusion_problems(config)
    if problems:
        raise ConfigError("invalid config:\n" + "\n".join(f"  - {p}" for p in problems))


# The sources whose models can be loaded at their random initialisation (`untrained: true`).
UNTRAINED_SOURCES = ("world", "open_clip", "hf")
# What an untrained control shares with the model it controls: its architecture and inputs.
CONTROL_KEYS = ("source", "name", "weights", "revision")

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


# the side of the thumbnails kept in activation stores (image + caption pairs, image folders)
THUMBNAIL_PX = 64


def thumbnail_stores(config: dict) -> set[tuple[str, str]]:
    """The (model, dataset) extractions that keep a `THUMBNAIL_PX` thumbnail of every image
    (`extract.thumbnails`): auto = each model's SAE evaluation dataset, what the atlas shows; a
    list = those datasets wherever they are extracted. Image folders only: the world's stores
    read their images from the world's own array."""
    choice = config["extract"].get("thumbnails", "auto")
    datasets = config["datasets"]
    out = set()
    for model, names in config["extract"]["datasets"].items():
        if choice == "auto":
            sae = config.get("sae")
            if not sae or model not in sae["sites"]:
                continue
            wanted = {
                sae.get("overrides", {}).get(model, {}).get("eval_dataset", sae["eval_dataset"])
            }
        else:
            wanted = set(choice)
        out |= {(model, d) for d in names if d in wanted and datasets[d]["source"] == "imagefolder"}
    return out


def _thumbnail_problems(config: dict) -> list[str]:
    """A listed `extract.thumbnails` entry must be an extracted image-folder dataset."""
    choice = config.get("extract", {}).get("thumbnails", "auto")
    if choice == "auto":
        return []
    datasets = config.get("datasets", {})
    extracted = {d for names in config["extract"].get("datasets", {}).values() for d in names}
    problems = []
    for i, name in enumerate(choice):
        key = f"config key 'extract.thumbnails[{i}]'"
        if name not in datasets:
            problems.append(f"{key}: '{name}' is not defined under 'datasets'")
        elif datasets[name]["source"] != "imagefolder":
            problems.append(
                f"{key}: '{name}' (source {datasets[name]['source']}) is not an image folder; "
                "only image folders make thumbnails at extraction (the world's stores read its "
                "images, pairs keep their own)"
            )
        elif name not in extracted:
            problems.append(f"{key}: '{name}' is not extracted (listed in 'extract.datasets')")
    return problems


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
            problems += sae_entry_problems(f"{where}.{name}", entry)
    for model in sae["sites"]:
        problems += _primary_problems(sae, model)
    return problems


def _primary_problems(sae: dict, model: str) -> list[str]:
    """The judged SAE of a model must be one of its sweep, and named when there is a choice."""
    override = sae.get("overrides", {}).get(model, {})
    sweep = override.get("sweep", sae["sweep"])
    if "primary" in override:
        where, primary = f"sae.overrides.{model}.primary", override["primary"]
    elif "primary" in sae and "sweep" not in override:
        where, primary = "sae.primary", sae["primary"]
    elif len(sweep) > 1:
        where = f"sae.overrides.{model}.primary" if "sweep" in override else "sae.primary"
        return [
            f"config key '{where}': the sweep for {model} has {len(sweep)} SAEs "
            f"({sorted(sweep)}); name the one the verdicts judge"
        ]
    else:
        return []
    if primary not in sweep:
        return [
            f"config key '{where}': '{primary}' is not in the sweep for {model} ({sorted(sweep)})"
        ]
    return []


# datasets read from the world's splits, by source
WORLD_DATASETS = ("world", "world_captions", "world_pairs")
# the categorical columns of a world split's manifest (`saeprobe.world.generate.MANIFEST_COLUMNS`)
WORLD_FACTORS = ("shape", "superclass", "colour", "background", "rendering")


# COCO 2017 splits with captions (test2017 has none); one annotations archive covers both
COCO_SPLITS = ("train2017", "val2017")


def coco_split_problem(key: str, split: Any) -> str | None:
    """The config error for a COCO split that is not one of `COCO_SPLITS` (None when it is)."""
    if split in COCO_SPLITS:
        return None
    return (
        f"config key '{key}': {split!r} is not a COCO split with captions "
        f"(expected one of {list(COCO_SPLITS)})"
    )


def coco_archive(coco: Mapping[str, Any], part: str) -> tuple[str, str | None]:
    """(url, sha256 or None) of one COCO 2017 archive: `part` "annotations" (captions and
    instances of both splits) or a split of `COCO_SPLITS` (its images). `coco` is the config's
    `mllm.coco` (annotations_url, annotations_sha256, images_urls, images_sha256)."""
    if part == "annotations":
        url, sha256 = coco.get("annotations_url"), coco.get("annotations_sha256")
        key = "mllm.coco.annotations_url"
    else:
        problem = coco_split_problem("mllm.coco.images_urls", part)
        if problem:
            raise ValueError(problem)
        url = coco.get("images_urls", {}).get(part)
        sha256 = (coco.get("images_sha256") or {}).get(part)
        key = f"mllm.coco.images_urls.{part}"
    if not url:
        raise ValueError(f"config key '{key}': expected the archive's URL, got none")
    return url, sha256


def model_dataset_problems(config: dict) -> list[str]:
    """Layers a world model does not have (its depth is in the config), world splits that are
    not generated, COCO splits without captions, and dataset entries that lack what their
    source needs."""
    problems = []
    depth = {
        "world": ("world_clip.vision_layers", config.get("world_clip", {}).get("vision_layers")),
        "world_diffusion": (
            "world_clip.text_layers (the world text encoder is the world CLIP's text tower)",
            config.get("world_clip", {}).get("text_layers"),
        ),
        "world_llava": (
            "mllm.world_llava.layers",
            config.get("mllm", {}).get("world_llava", {}).get("layers"),
        ),
    }
    for name, spec in config.get("models", {}).items():
        key, n = depth.get(spec["source"], (None, None))
        bad = [layer for layer in spec["layers"] if n is not None and layer >= n]
        if bad:
            problems.append(
                f"config key 'models.{name}.layers': {bad} beyond the {n} blocks of the "
                f"{spec['source']} model (0-based; {key})"
            )
    splits = sorted(config.get("world", {}).get("splits", {}))
    for name, spec in config.get("datasets", {}).items():
        if spec["source"] in WORLD_DATASETS and spec.get("split") not in splits:
            problems.append(
                f"config key 'datasets.{name}.split': {spec.get('split')!r} is not a world split "
                f"(expected one of {splits}, see world.splits)"
            )
        if spec["source"] == "coco":
            problem = coco_split_problem(f"datasets.{name}.split", spec.get("split"))
            problems += [problem] if problem else []
        if spec["source"] == "imagefolder" and "root" not in spec:
            problems.append(
                f"config key 'datasets.{name}.root': an imagefolder dataset needs the folder of "
                "its class subfolders (root/<class>/<image>)"
            )
        if spec["source"] == "world_captions" and "n_prompts" not in spec:
            problems.append(f"config key 'datasets.{name}.n_prompts': world captions need it")
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
    ood = vision.get("ood_detection", {})
    for key in ("far_dataset", "fresh_id_dataset"):
        if key in ood:
            datasets.append((f"ood_detection.{key}", ood[key]))
    known = {
        *ood.get("ood_datasets", []),
        *(ood[k] for k in ("far_dataset", "fresh_id_dataset") if k in ood),
    }
    for name in ood.get("ood_groups", {}):
        if name not in known:
            problems.append(
                f"config key 'vision.ood_detection.ood_groups.{name}': '{name}' is not one of "
                "'vision.ood_detection.ood_datasets' (or its far / fresh controls)"
            )
    if "measured_dataset" in ood and ood["measured_dataset"] not in ood.get("ood_datasets", []):
        problems.append(
            "config key 'vision.ood_detection.measured_dataset': "
            f"'{ood['measured_dataset']}' is not one of 'vision.ood_detection.ood_datasets'"
        )
    train_source = config.get("datasets", {}).get(vision["train_dataset"], {}).get("source")
    for i, factor in enumerate(ood.get("factors", [])):
        allowed = WORLD_FACTORS if train_source in WORLD_DATASETS else ()
        if factor not in allowed:
            problems.append(
                f"config key 'vision.ood_detection.factors[{i}]': '{factor}' is not an image "
                f"attribute of the training dataset '{vision['train_dataset']}' (expected one of "
                f"{list(allowed)}; a {train_source} dataset has {'these' if allowed else 'none'})"
            )
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
    problems += _untrained_control_problems(config)
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


def sae_primary_entry(sae: dict, model: str) -> tuple[str, dict] | None:
    """(name, sweep entry) of a model's judged SAE (as the workflow's `sae_primary` picks it),
    or None when it is not named and the sweep has several."""
    override = sae.get("overrides", {}).get(model, {})
    sweep = override.get("sweep", sae["sweep"])
    if "primary" in override:
        name = override["primary"]
    elif "primary" in sae and "sweep" not in override:
        name = sae["primary"]
    elif len(sweep) == 1:
        name = next(iter(sweep))
    else:
        return None
    return (name, sweep[name]) if name in sweep else None


def _untrained_control_problems(config: dict) -> list[str]:
    """vision.semantics.untrained_controls: each control an untrained models entry outside
    vision.models, with the model's source, name, weights and revision, its SAE sites, the same
    primary SAE and activations on vision.id_dataset."""
    vision = config["vision"]
    controls = vision.get("semantics", {}).get("untrained_controls", {})
    models = config.get("models", {})
    sae = config.get("sae", {})
    sites = sae.get("sites", {})
    extracted = config.get("extract", {}).get("datasets", {})
    problems = []
    for model, control in controls.items():
        key = f"config key 'vision.semantics.untrained_controls.{model}'"
        if model not in vision["models"]:
            problems.append(f"{key}: '{model}' is not in vision.models {vision['models']}")
            continue
        if control not in models:
            problems.append(f"{key}: '{control}' is not defined under 'models'")
            continue
        if control in vision["models"]:
            problems.append(f"{key}: the control '{control}' must stay out of vision.models")
        if not models[control].get("untrained"):
            problems.append(f"{key}: '{control}' is not untrained (models.{control}.untrained)")
        measured = models.get(model, {})
        differ = [k for k in CONTROL_KEYS if models[control].get(k) != measured.get(k)]
        if differ:
            problems.append(
                f"{key}: '{control}' differs from '{model}' in {differ}; an untrained copy "
                "keeps the model's source, name, weights and revision (its architecture and "
                "preprocessing)"
            )
        missing = sorted(set(sites.get(model, [])) - set(sites.get(control, [])))
        if missing:
            problems.append(
                f"{key}: '{control}' lacks the SAE sites {missing} of '{model}' (sae.sites)"
            )
        if vision["id_dataset"] not in extracted.get(control, []):
            problems.append(
                f"{key}: vision.id_dataset '{vision['id_dataset']}' is not listed in "
                f"'extract.datasets.{control}'"
            )
        if model in sites and control in sites:
            ours, theirs = sae_primary_entry(sae, model), sae_primary_entry(sae, control)
            if ours is None or theirs is None or ours != theirs:
                problems.append(
                    f"{key}: the primary SAE of '{control}' ({theirs}) must equal that of "
                    f"'{model}' ({ours}) (sae.primary / sae.overrides.{control})"
                )
    return problems


def _mllm_problems(config: dict) -> list[str]:
    """Cross-references of the `mllm:` section: multimodal LLMs with SAE sites."""
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
    for name, spec in models.items():
        if spec.get("shuffle_captions") and spec["source"] != "world_llava":
            problems.append(
                f"config key 'models.{name}.shuffle_captions': only a world_llava model is "
                f"trained here, got source {spec['source']!r}"
            )
    for measured, control in mllm.get("negatives", {}).items():
        where = f"config key 'mllm.negatives.{measured}'"
        spec = models.get(control, {})
        if measured not in mllm["models"]:
            problems.append(f"{where}: '{measured}' is not in mllm.models")
        elif not spec.get("shuffle_captions"):
            problems.append(
                f"{where}: '{control}' must be a world_llava model under 'models' with "
                "shuffle_captions: true"
            )
        elif sites.get(control) != sites.get(measured):
            problems.append(
                f"{where}: 'sae.sites.{control}' must equal 'sae.sites.{measured}' "
                f"({sites.get(measured)}), got {sites.get(control)}"
            )
    return problems


PAIR_SOURCES = ("world_pairs", "coco")


def _text_only_problems(config: dict) -> list[str]:
    """The crossmodal text-only control: `mllm.text_only` names, per measured model, its
    evaluation dataset with text_only: true, extracted for that model."""
    problems = []
    datasets = config.get("datasets", {})
    for name, spec in datasets.items():
        if spec.get("text_only") and spec["source"] not in PAIR_SOURCES:
            problems.append(
                f"config key 'datasets.{name}.text_only': only image + caption pairs "
                f"({' or '.join(PAIR_SOURCES)}) have captions to run alone, got source "
                f"{spec['source']!r}"
            )
    mllm = config.get("mllm") or {}
    sae = config.get("sae", {})
    extracted = config.get("extract", {}).get("datasets", {})
    for model, name in mllm.get("text_only", {}).items():
        where = f"config key 'mllm.text_only.{model}'"
        spec = datasets.get(name)
        if model not in mllm.get("models", []):
            problems.append(f"{where}: '{model}' is not in mllm.models")
            continue
        if spec is None or not spec.get("text_only"):
            problems.append(
                f"{where}: '{name}' must be a dataset under 'datasets' with text_only: true"
            )
            continue
        if name not in extracted.get(model, []):
            problems.append(f"{where}: '{name}' is not in extract.datasets.{model}")
        eval_name = sae.get("overrides", {}).get(model, {}).get("eval_dataset")
        eval_name = eval_name or sae.get("eval_dataset")
        measured = {k: v for k, v in datasets.get(eval_name, {}).items() if k != "text_only"}
        alone = {k: v for k, v in spec.items() if k != "text_only"}
        differ = sorted(
            k for k in measured.keys() | alone.keys() if measured.get(k) != alone.get(k)
        )
        if differ:
            shown = ", ".join(f"{k}: {alone.get(k)!r} vs {measured.get(k)!r}" for k in differ)
            problems.append(
                f"{where}: '{name}' must be the evaluation dataset '{eval_name}' of '{model}' "
                f"with text_only: true; they differ in {shown}"
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
    if config["models"].get(d["model"], {}).get("source") == "world_diffusion":
        problems += caption_problems("diffusion.world_model", d["world_model"])
    for name, dataset in config.get("datasets", {}).items():
        if dataset["source"] == "world_captions":
            problems += caption_problems(f"datasets.{name}.captions", dataset["captions"])
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


def _problem(key: str, expected: str, got: Any) -> str:
    return f"config key '{key}': expected {expected}, got {got!r}"


def world_problems(config: dict) -> list[str]:
    """Rules between keys of `world:` and `world_clip:` (both filled with their defaults)."""
    problems: list[str] = []
    world = config.get("world")
    if world is not None:
        shapes = [s for members in world["superclasses"].values() for s in members]
        repeated = sorted({s for s in shapes if shapes.count(s) > 1})
        if repeated:
            problems.append(
                _problem(
                    "world.superclasses",
                    f"each shape in exactly one superclass ({repeated} in several)",
                    world["superclasses"],
                )
            )
        held = world["heldout_shapes"]
        missing = [s for s in held if s not in shapes]
        if missing:
            problems.append(
                _problem(
                    "world.heldout_shapes",
                    f"shapes of world.superclasses ({sorted(set(shapes))}); not there: {missing}",
                    held,
                )
            )
        for name, members in sorted(world["superclasses"].items()):
            if all(m in held for m in members):
                problems.append(
                    _problem(
                        "world.heldout_shapes",
                        f"at least one training shape left in superclass '{name}' {members}",
                        held,
                    )
                )
        trained = [s for s in shapes if s not in held]
        seen = sorted(set(world["near_ood_shapes"]) & set(trained))
        if seen:
            problems.append(
                _problem(
                    "world.near_ood_shapes",
                    f"shapes never trained on (training shapes among them: {seen})",
                    world["near_ood_shapes"],
                )
            )
        seen = sorted(set(world["ood_colours"]) & set(world["colours"]))
        if seen:
            problems.append(
                _problem(
                    "world.ood_colours",
                    f"colours none of which is in world.colours (both have {seen})",
                    world["ood_colours"],
                )
            )
        problems += supergroup_problems(world)
        overlap = sorted(set(world["ood_backgrounds"]) & set(world["backgrounds"]))
        if overlap:
            problems.append(
                _problem(
                    "world.ood_backgrounds",
                    f"textures none of which is in world.backgrounds (both have {overlap})",
                    world["ood_backgrounds"],
                )
            )
        low, high = world["size_range"]
        if low > high:
            problems.append(
                _problem("world.size_range", "[min, max] with min <= max", world["size_range"])
            )
    clip = config.get("world_clip")
    if clip is not None:
        for width, heads in (("vision_width", "vision_head_width"), ("text_width", "text_heads")):
            if clip[width] % clip[heads]:
                problems.append(
                    _problem(
                        f"world_clip.{heads}",
                        f"a divisor of world_clip.{width} ({clip[width]})",
                        clip[heads],
                    )
                )
        if world is not None and world["image_size"] % clip["patch_size"]:
            problems.append(
                _problem(
                    "world_clip.patch_size",
                    f"a divisor of world.image_size ({world['image_size']})",
                    clip["patch_size"],
                )
            )
        problems += caption_problems("world_clip", clip)
    return problems


def supergroup_problems(world: dict) -> list[str]:
    """world.supergroups: every superclass in exactly one supergroup, names unlike the
    superclasses' and shapes'."""
    groups = world.get("supergroups")
    if not groups:
        return []
    supers = sorted(world["superclasses"])
    members = [m for ms in groups.values() for m in ms]
    problems = []
    unknown = sorted(set(members) - set(supers))
    if unknown:
        problems.append(
            _problem("world.supergroups", f"superclasses of world.superclasses {supers}", unknown)
        )
    once = sorted({m for m in supers if members.count(m) != 1})
    if once:
        problems.append(
            _problem(
                "world.supergroups",
                f"each superclass in exactly one supergroup (not so for {once})",
                groups,
            )
        )
    shapes = {s for ms in world["superclasses"].values() for s in ms}
    clash = sorted(set(groups) & (set(supers) | shapes))
    if clash:
        problems.append(
            _problem("world.supergroups", "names unlike any superclass or shape", clash)
        )
    return problems


def caption_problems(key: str, section: dict) -> list[str]:
    """World caption probabilities (saeprobe.world.clip.CaptionSampler): a caption names the
    superclass or only "shape", never both, so their probabilities add up to at most 1."""
    total = section["caption_superclass_p"] + section["caption_generic_p"]
    if total > 1:
        return [
            _problem(
                f"{key}.caption_generic_p",
                f"a probability with {key}.caption_superclass_p + caption_generic_p <= 1 "
                f"(sum {total:g})",
                section["caption_generic_p"],
            )
        ]
    return []


def sae_entry_problems(key: str, entry: dict) -> list[str]:
    """Rules between the keys of one SAE (an entry of a sweep, or `mllm.sae`)."""
    problems: list[str] = []
    k = entry.get("k")
    if (
        entry["arch"] in ("topk", "batchtopk", "matryoshka")
        and k is not None
        and entry["width"] < k
    ):
        problems.append(_problem(f"{key}.width", f"at least {key}.k ({k})", entry["width"]))
    prefixes = entry.get("matryoshka_prefixes")
    if entry["arch"] == "matryoshka" and prefixes is not None:
        if not prefixes or list(prefixes) != sorted(set(prefixes)):
            problems.append(
                _problem(f"{key}.matryoshka_prefixes", "strictly increasing sizes", prefixes)
            )
        elif prefixes[-1] != entry["width"]:
            problems.append(
                _problem(
                    f"{key}.matryoshka_prefixes",
                    f"the last prefix equal to {key}.width ({entry['width']})",
                    prefixes,
                )
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
