"""The config is validated before any job runs, and errors name the key and what was expected."""

from __future__ import annotations

import copy
import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft202012Validator
from snakemake.utils import update_config
from snakemake_run import ROOT, run_snakemake

from saeprobe.config import (
    ConfigError,
    FromConfig,
    _with_defaults,
    gpus_for,
    load_schema,
    load_section,
    load_sections,
    validate_config,
)

SCHEMA = ROOT / "schemas" / "config.schema.yaml"
# overlays, given after a base config (`--configfile BASE OVERLAY`), are checked merged on it
OVERLAY_BASES = {"world_b.yaml": "config.yaml", "rehearsal.yaml": "configs/paper.yaml"}
CONFIGS = [ROOT / "config.yaml", *sorted((ROOT / "configs").glob("*.yaml"))]


def load(path: Path) -> dict:
    """A shipped config as snakemake sees it: an overlay merged on its base."""
    config = yaml.safe_load(path.read_text())
    if path.name in OVERLAY_BASES:
        base = load(ROOT / OVERLAY_BASES[path.name])
        update_config(base, config)
        return base
    return config


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_are_valid(path: Path) -> None:
    validate_config(load(path), SCHEMA)


def test_defaults_are_filled() -> None:
    config = load(ROOT / "config.yaml")
    del config["extract"]["dtype"]
    validate_config(config, SCHEMA)
    assert config["extract"]["dtype"] == "float16"


def test_each_shipped_config_writes_under_a_root_of_its_own() -> None:
    roots = [load(path)["results"] for path in CONFIGS]
    assert len(set(roots)) == len(roots)
    config = load(ROOT / "config.yaml")
    del config["results"]
    assert validate_config(config, SCHEMA)["results"] == "results"


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda c: c.update(sede=1), ["unknown key", "'sede'"]),
        (lambda c: c["extract"].update(batch_size="big"), ["extract.batch_size", "integer"]),
        (lambda c: c["models"]["world_clip"].update(tokens=["cls", "tok"]), ["tokens[1]"]),
        (lambda c: c["models"]["world_clip"].update(layer=[1]), ["'models.world_clip'", "layer"]),
        (lambda c: c.update(device="tpu"), ["'device'", "auto", "cuda"]),
        # the results root stays inside the working directory
        (lambda c: c.update(results="/scratch/results"), ["'results'", "does not match"]),
        (lambda c: c.update(results="results/../elsewhere"), ["'results'", "does not match"]),
        (
            lambda c: c["extract"]["datasets"]["world_clip"].append("nope"),
            ["extract.datasets.world_clip[9]", "'nope'"],
        ),
        (
            lambda c: c["extract"]["datasets"]["world_diffusion"].append("world_train"),
            ["extract.datasets.world_diffusion[2]", "cannot feed a text_encoder model"],
        ),
        (
            lambda c: c["sae"]["sites"]["world_diffusion"].append("L3_all"),
            ["sae.sites.world_diffusion[1]", "'L3_all' is not extracted"],
        ),
        (
            lambda c: c["sae"]["overrides"].update(nobody={"train": {"lr": 0.1}}),
            ["sae.overrides.nobody", "no sae.sites"],
        ),
        (
            lambda c: c["sae"]["overrides"]["world_diffusion"]["train"].update(lr_decay=1),
            ["sae.overrides.world_diffusion.train", "lr_decay"],
        ),
        (lambda c: c["models"]["world_diffusion"].update(pooled=True), ["models.world_diffusion"]),
        (lambda c: c["diffusion"].update(model="world_clip"), ["diffusion.model", "text-to-image"]),
        (
            lambda c: c["models"]["world_clip"].update(layers=[0, 1, 2, 3]),
            ["models.world_clip.layers", "[3] beyond the 3 blocks", "world_clip.vision_layers"],
        ),
        (
            lambda c: c["models"]["world_diffusion"].update(layers=[0, 1]),
            ["models.world_diffusion.layers", "[1] beyond the 1 blocks", "text_layers"],
        ),
        (
            lambda c: c["datasets"]["world_test"].update(split="tset"),
            ["datasets.world_test.split", "'tset' is not a world split", "shift_noise"],
        ),
        (
            lambda c: c["datasets"].update(folder={"source": "imagefolder"}),
            ["datasets.folder.root", "imagefolder"],
        ),
        (lambda c: c["models"]["world_clip"].update(layers=[1, 1]), ["models.world_clip.layers"]),
        (
            lambda c: c["vision"]["ood_detection"].update(ood_datasets=["world_ood_x"]),
            ["vision.ood_detection.ood_datasets[0]", "'world_ood_x'", "extract.datasets"],
        ),
        (
            lambda c: c["vision"]["ood_detection"].update(far_dataset="world_far_x"),
            ["vision.ood_detection.far_dataset", "'world_far_x'", "extract.datasets"],
        ),
        (
            lambda c: c["vision"]["ood_detection"].update(measured_dataset="world_id_fresh"),
            ["vision.ood_detection.measured_dataset", "ood_datasets"],
        ),
        (
            lambda c: c["vision"]["ood_detection"].update(ood_groups={"world_ood_x": "near"}),
            ["vision.ood_detection.ood_groups.world_ood_x", "ood_datasets"],
        ),
        (
            lambda c: c["vision"]["ood_detection"].update(factors=["shape", "hue"]),
            ["vision.ood_detection.factors[1]", "'hue'", "colour"],
        ),
        (lambda c: c["world"].update(ood_colours=["red", "white"]), ["world.ood_colours", "red"]),
        (lambda c: c["world"].update(near_ood_shapes=["star"]), ["world.near_ood_shapes", "star"]),
        (lambda c: c["vision"].update(models=["dino"]), ["vision.models[0]", "sae.sites"]),
        (
            lambda c: c["vision"]["semantics"].update(namers={"world_clip": "dino"}),
            ["vision.semantics.namers.world_clip", "'dino'"],
        ),
        (lambda c: c["vision"]["ontology"].update(tau=1.5), ["vision.ontology.tau"]),
        (
            lambda c: c["vision"]["semantics"].update(untrained_controls={"world_clip": "nope"}),
            ["vision.semantics.untrained_controls.world_clip", "'nope'"],
        ),
        (
            lambda c: c["sae"]["sites"].update(world_clip_untrained=["pooled"]),
            ["vision.semantics.untrained_controls.world_clip", "L1_cls", "L2_cls"],
        ),
        (
            lambda c: c["sae"]["overrides"].update(
                world_clip_untrained={
                    "sweep": {"topk-w128-k8": {"arch": "topk", "width": 128, "k": 8}}
                }
            ),
            ["vision.semantics.untrained_controls.world_clip", "primary SAE"],
        ),
        (
            lambda c: c["vision"].update(models=["world_clip", "world_clip_untrained"]),
            ["vision.semantics.untrained_controls.world_clip", "out of vision.models"],
        ),
        (
            lambda c: c["models"]["world_diffusion"].update(untrained=True),
            ["models.world_diffusion.untrained", "source world"],
        ),
        (
            lambda c: c["world"].update(supergroups={"a": ["polygon", "oval"], "b": ["round"]}),
            ["world.supergroups", "oval"],
        ),
        (
            lambda c: c["world"].update(supergroups={"a": ["polygon"], "b": ["round"]}),
            ["world.supergroups", "exactly one supergroup", "symbol"],
        ),
        (
            lambda c: c["world"].update(
                supergroups={"round": ["polygon", "symbol"], "b": ["round"]}
            ),
            ["world.supergroups", "unlike any superclass"],
        ),
        (lambda c: c["world"].update(supergroups={"a": ["polygon"]}), ["world.supergroups"]),
        (lambda c: c["vision"].update(hierarchy={"source": "wordnet"}), ["vision.hierarchy.is_a"]),
    ],
)
def test_bad_values_name_the_key(mutate, expected: list[str]) -> None:
    config = copy.deepcopy(load(ROOT / "config.yaml"))
    mutate(config)
    with pytest.raises(ConfigError) as info:
        validate_config(config, SCHEMA)
    for fragment in expected:
        assert fragment in str(info.value)


PAPER = ROOT / "configs" / "paper.yaml"


def test_paper_config_controls_its_hub_models_with_untrained_copies() -> None:
    config = load(PAPER)
    controls = config["vision"]["semantics"]["untrained_controls"]
    assert set(controls) == set(config["vision"]["models"])
    assert {config["models"][c]["source"] for c in controls.values()} == {"open_clip", "hf"}
    assert all(config["models"][c]["untrained"] for c in controls.values())
    validate_config(config, SCHEMA)


def _control(c: dict) -> dict:
    return c["models"]["clip_vitl14_untrained"]


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda c: c["models"]["sd15"].update(untrained=True),
            ["models.sd15.untrained", "not source diffusers"],
        ),
        (
            lambda c: c["models"]["llava15_7b"].update(untrained=True),
            ["models.llava15_7b.untrained", "not source llava"],
        ),
        (
            lambda c: _control(c).pop("untrained"),
            ["untrained_controls.clip_vitl14", "'clip_vitl14_untrained' is not untrained"],
        ),
        (
            lambda c: _control(c).update(name="ViT-B-16"),
            ["untrained_controls.clip_vitl14", "differs from 'clip_vitl14' in ['name']"],
        ),
        (
            lambda c: _control(c).update(weights="openai"),
            ["untrained_controls.clip_vitl14", "in ['weights']"],
        ),
        (
            lambda c: c["extract"]["datasets"].update(clip_vitl14_untrained=["imagenet_train"]),
            ["untrained_controls.clip_vitl14", "'imagenet_val'", "clip_vitl14_untrained"],
        ),
    ],
)
def test_untrained_rules_name_the_key(mutate, expected: list[str]) -> None:
    config = copy.deepcopy(load(PAPER))
    mutate(config)
    with pytest.raises(ConfigError) as info:
        validate_config(config, SCHEMA)
    for fragment in expected:
        assert fragment in str(info.value), str(info.value)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda c: c["datasets"]["coco_pairs_train"].update(split="test2017"),
            ["datasets.coco_pairs_train.split", "'test2017' is not a COCO split", "train2017"],
        ),
        (
            lambda c: c["datasets"]["coco_pairs_eval"].pop("split"),
            ["datasets.coco_pairs_eval.split", "None is not a COCO split", "val2017"],
        ),
        (
            lambda c: c["mllm"]["coco"].update(images_urls={"test2017": "http://x/test2017.zip"}),
            ["mllm.coco.images_urls", "test2017"],
        ),
    ],
)
def test_coco_splits_name_the_key(mutate, expected: list[str]) -> None:
    config = copy.deepcopy(load(PAPER))
    assert {config["datasets"][n]["split"] for n in ("coco_pairs_train", "coco_pairs_eval")} == {
        "train2017",
        "val2017",
    }
    mutate(config)
    with pytest.raises(ConfigError) as info:
        validate_config(config, SCHEMA)
    for fragment in expected:
        assert fragment in str(info.value), str(info.value)


def test_gpu_request_follows_device() -> None:
    assert gpus_for({"device": "cuda"}) == 1
    assert gpus_for({"device": "cpu"}) == 0
    assert gpus_for({"device": "auto"}) == 0


def test_snakemake_stops_before_any_job_on_a_bad_config(tmp_path: Path) -> None:
    config = load(ROOT / "config.yaml")
    config["extract"]["dtype"] = "float8"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(config))
    result = run_snakemake(
        "--cores", "1", "--configfile", str(bad), "--directory", str(tmp_path), "-n"
    )
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "extract.dtype" in output and "float16" in output
    assert "Job stats" not in output
    assert not (tmp_path / "results").exists()


# -- one loader: config sections -> typed dataclasses ------------------------------------------


def _validated(path: Path = ROOT / "config.yaml") -> dict:
    return validate_config(load(path), SCHEMA)


def _resolve(schema: dict, node: dict) -> dict:
    while "$ref" in node:
        node = schema["$defs"][node["$ref"].rsplit("/", 1)[-1]]
    return node


def schema_at(schema: dict, path: str) -> dict:
    """The subschema of a dotted config key; `*` stands for any name of a name -> entry map."""
    node = schema
    for part in path.split("."):
        node = _resolve(schema, node)
        node = node["additionalProperties"] if part == "*" else node["properties"][part]
    return _resolve(schema, node)


def schema_defaults(schema: dict, path: str) -> dict:
    """What validating an empty section at `path` fills in: its keys' defaults, nested ones too."""
    sub = {**schema_at(schema, path), "$defs": schema["$defs"]}
    filled: dict = {}
    for _ in _with_defaults(Draft202012Validator)(sub).iter_errors(filled):
        pass  # missing required keys: only the filled defaults matter here
    return filled


def section_at(config: dict, path: str) -> list[tuple[str, dict]]:
    """(dotted key, section) for every section of `config` at `path` (`*` = every entry)."""
    found = [("", config)]
    for part in path.split("."):
        step = []
        for key, node in found:
            items = node.items() if part == "*" else [(part, node[part])] if part in node else []
            step += [(f"{key}.{name}" if key else name, value) for name, value in items]
        found = step
    return found


@dataclass(frozen=True)
class Mapped:
    """Dataclasses that a schema section is read into.

    outside: fields set from outside the section (global seed/device, job threads, the task's
    hook settings). strict: every optional key of the section has a schema default and it
    equals the dataclass default (the dataclass is also built outside the config). Not strict:
    the dataclass is shared by sections whose defaults differ by design (the SAE schedule of the
    vision, text and multimodal SAEs), or the section has keys without schema default that the
    dataclass fills (the sweep entries: arch-dependent SAE defaults, see SAE_ONLY_IN_PYTHON).
    """

    classes: tuple[str, ...]
    path: str
    outside: tuple[str, ...] = ()
    strict: bool = True

    def outside_values(self) -> dict:
        """Stand-ins for the outside fields (the loader needs those without a default)."""
        return {name: "all" if name == "tokens" else 0 for name in self.outside}


def _classes():
    from saeprobe.atlas.build import AtlasSettings
    from saeprobe.diffusion.steering import GenSettings
    from saeprobe.sae import SAEConfig, TrainConfig
    from saeprobe.world.config import WorldClipConfig, WorldConfig
    from saeprobe.world.diffusion import WorldDiffusionConfig
    from saeprobe.world.llava import CaptionerConfig
    from saeprobe.world.llava_model import TinyLlamaSpec

    classes = (
        AtlasSettings,
        GenSettings,
        WorldDiffusionConfig,
        TinyLlamaSpec,
        CaptionerConfig,
        SAEConfig,
        TrainConfig,
        WorldClipConfig,
        WorldConfig,
    )
    return {c.__name__: c for c in classes}


MAPPED = [
    Mapped(("WorldConfig",), "world", ("seed",)),
    Mapped(("WorldClipConfig",), "world_clip", ("seed", "device", "threads")),
    Mapped(("TrainConfig",), "sae.train"),
    Mapped(("SAEConfig",), "sae.sweep.*", ("name",), strict=False),
    Mapped(("WorldDiffusionConfig",), "diffusion.world_model", ("seed", "device", "threads")),
    Mapped(("WorldClipConfig",), "datasets.*.captions", strict=False),
    Mapped(("TrainConfig",), "sae.overrides.*.train", strict=False),
    Mapped(("GenSettings",), "diffusion.generation", ("layer", "tokens", "branch", "mode")),
    Mapped(("CaptionerConfig", "TinyLlamaSpec"), "mllm.world_llava", ("seed",)),
    Mapped(("AtlasSettings",), "atlas"),
]
# Optional keys of the SAE sweep entries whose default lives in SAEConfig only.
SAE_ONLY_IN_PYTHON = {"k", "l1", "l0", "matryoshka_base", "matryoshka_prefixes", "auxk_coef"}
SAE_ONLY_IN_PYTHON |= {"b_dec_init", "lr"}


def _load(mapped: Mapped, data: dict, key: str) -> tuple:
    classes = tuple(_classes()[c] for c in mapped.classes)
    return load_sections(classes, data, key, **mapped.outside_values())


def _field_defaults(cls: type) -> dict:
    return {
        f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING
    }


@pytest.mark.parametrize("mapped", MAPPED, ids=lambda m: m.path)
def test_schema_keys_are_dataclass_fields(mapped: Mapped) -> None:
    keys = set(schema_at(load_schema(SCHEMA), mapped.path)["properties"])
    fields = {f.name for c in mapped.classes for f in dataclasses.fields(_classes()[c])}
    assert keys <= fields - set(mapped.outside), sorted(keys - fields)


@pytest.mark.parametrize("mapped", MAPPED, ids=lambda m: m.path)
def test_dataclass_defaults_equal_schema_defaults(mapped: Mapped) -> None:
    schema = load_schema(SCHEMA)
    sub = schema_at(schema, mapped.path)
    filled = schema_defaults(schema, mapped.path)
    objects = _load(mapped, filled, mapped.path)
    for cls, obj in zip((_classes()[c] for c in mapped.classes), objects, strict=True):
        for name, default in _field_defaults(cls).items():
            if name not in sub["properties"]:
                continue  # not a config key (set from outside, or a library-only knob)
            if not mapped.strict:
                if mapped.path.endswith("sweep.*") and name not in filled:
                    assert name in SAE_ONLY_IN_PYTHON | set(sub.get("required", [])), name
            elif name in filled:
                assert getattr(obj, name) == default, (mapped.path, name)
            elif name not in sub.get("required", []):
                pytest.fail(f"{mapped.path}.{name}: default {default!r} only in {cls.__name__}")


def test_every_config_dataclass_is_mapped() -> None:
    classes = _classes()
    mapped = {c for m in MAPPED for c in m.classes}
    assert {c.__name__ for c in FromConfig.__subclasses__()} <= mapped <= set(classes)


@pytest.mark.parametrize("task", ["diffusion.steering", "diffusion.attributes"])
def test_generation_hook_defaults_equal_the_task_defaults(task: str) -> None:
    gen = _field_defaults(_classes()["GenSettings"])
    filled = schema_defaults(load_schema(SCHEMA), task)
    assert {k: filled[k] for k in ("tokens", "branch", "mode")} == {
        k: gen[k] for k in ("tokens", "branch", "mode")
    }


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_section_loads(path: Path) -> None:
    config = _validated(path)
    for mapped in MAPPED:
        for key, section in section_at(config, mapped.path):
            objects = _load(mapped, section, key)
            assert all(dataclasses.is_dataclass(o) for o in objects)


@pytest.mark.parametrize("mapped", MAPPED, ids=lambda m: m.path)
def test_loader_rejects_unknown_keys(mapped: Mapped) -> None:
    key, section = section_at(_validated(), mapped.path)[0]
    with pytest.raises(ConfigError) as info:
        _load(mapped, {**section, "bogus_key": 1}, key)
    assert f"'{key}.bogus_key'" in str(info.value) and "allowed keys" in str(info.value)
    for name in mapped.outside:  # set from outside: not a key of the section
        with pytest.raises(ConfigError, match=re.escape(f"'{key}.{name}'")):
            _load(mapped, {**section, name: 0}, key)


def test_loader_names_missing_and_mistyped_keys() -> None:
    from saeprobe.diffusion.steering import GenSettings
    from saeprobe.world.config import WorldConfig

    with pytest.raises(ConfigError, match=re.escape("'diffusion.generation.layer'")):
        load_section(GenSettings, {}, "diffusion.generation")
    with pytest.raises(ConfigError, match=re.escape("'world': expected a mapping")):
        load_section(WorldConfig, [1], "world")


def test_loader_converts_to_the_field_types() -> None:
    from saeprobe.world.config import WorldConfig

    cfg = load_section(
        WorldConfig,
        {"size_range": [0.2, 0.3], "max_rotation": 10, "splits": {"test": 5, "train": 7}},
        "world",
        seed=3,
    )
    assert cfg.size_range == (0.2, 0.3) and isinstance(cfg.max_rotation, float)
    assert cfg.splits[:2] == (("train", 7), ("test", 5)) and cfg.seed == 3
    assert load_section(WorldConfig, cfg.to_dict(), "world") == cfg


def _sections(config: dict, schema: dict, key: str = "") -> list[str]:
    """Dotted keys of every closed mapping (additionalProperties: false) in `config`."""
    node = _resolve(schema, schema)
    found = [key] if node.get("additionalProperties") is False else []
    for name, value in config.items() if isinstance(config, dict) else []:
        if name in node.get("properties", {}):
            sub = node["properties"][name]
        elif isinstance(node.get("additionalProperties"), dict):
            sub = node["additionalProperties"]
        else:
            continue
        if isinstance(value, dict) and "oneOf" not in sub:
            found += _sections(
                value, {**sub, "$defs": schema["$defs"]}, f"{key}.{name}" if key else name
            )
    return found


def test_unknown_key_in_every_section_names_the_dotted_key() -> None:
    base = _validated()
    sections = _sections(base, load_schema(SCHEMA))
    assert {"world", "world.splits", "world_clip", "sae.train", "mllm.world_llava"} <= set(sections)
    for key in sections:
        config = copy.deepcopy(base)
        node = config
        for part in key.split(".") if key else []:
            node = node[part]
        node["bogus_key"] = 1
        with pytest.raises(ConfigError) as info:
            validate_config(config, SCHEMA)
        dotted = f"{key}.bogus_key" if key else "bogus_key"
        assert f"'{dotted}'" in str(info.value), (key, str(info.value))


def test_world_schema_names_match_the_renderer() -> None:
    from saeprobe.world.shapes import COLOURS, SHAPES, TEXTURES

    defs = load_schema(SCHEMA)["$defs"]
    assert defs["world_shape"]["enum"] == list(SHAPES)
    assert defs["world_colour"]["enum"] == list(COLOURS)
    assert defs["world_texture"]["enum"] == list(TEXTURES)


# -- rules between keys, checked before any job ------------------------------------------------


def _sweep_entry(c: dict) -> dict:
    return next(iter(c["sae"]["sweep"].values()))


def _matryoshka(c: dict, prefixes: list[int]) -> None:
    _sweep_entry(c).update(arch="matryoshka", width=32, k=2, matryoshka_prefixes=prefixes)


POLYGONS = ["triangle", "square", "rectangle", "hexagon"]


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda c: c["world"]["superclasses"].update(extra=["circle"]),
            ["world.superclasses", "['circle'] in several"],
        ),
        (
            lambda c: c["world"].update(heldout_shapes=["ring"]),
            ["world.heldout_shapes", "not there: ['ring']"],
        ),
        (
            lambda c: c["world"].update(heldout_shapes=POLYGONS),
            ["world.heldout_shapes", "'polygon'"],
        ),
        (
            lambda c: c["world"].update(ood_backgrounds=["plain", "grid"]),
            ["world.ood_backgrounds", "['plain']"],
        ),
        (lambda c: c["world"].update(size_range=[0.4, 0.3]), ["world.size_range", "[0.4, 0.3]"]),
        (
            lambda c: c["world_clip"].update(vision_head_width=24),
            ["world_clip.vision_head_width", "world_clip.vision_width (64)", "got 24"],
        ),
        (
            lambda c: c["world_clip"].update(text_heads=5),
            ["world_clip.text_heads", "world_clip.text_width (64)", "got 5"],
        ),
        (
            lambda c: c["world_clip"].update(patch_size=12),
            ["world_clip.patch_size", "world.image_size (32)", "got 12"],
        ),
        (
            lambda c: c["world_clip"].update(caption_superclass_p=0.5, caption_generic_p=0.6),
            ["world_clip.caption_generic_p", "<= 1", "got 0.6"],
        ),
        (
            lambda c: c["diffusion"]["world_model"].update(caption_generic_p=0.95),
            ["diffusion.world_model.caption_generic_p", "got 0.95"],
        ),
        (
            lambda c: c["datasets"]["world_prompts"]["captions"].update(caption_superclass_p=0.95),
            ["datasets.world_prompts.captions.caption_generic_p", "sum 1.05"],
        ),
        (
            lambda c: _sweep_entry(c).update(arch="topk", width=4, k=8),
            [".width': expected at least sae.sweep.", ".k (8)", "got 4"],
        ),
        (
            lambda c: _matryoshka(c, [8, 4, 32]),
            ["matryoshka_prefixes", "strictly increasing", "[8, 4, 32]"],
        ),
        (
            lambda c: _matryoshka(c, [8, 16]),
            ["matryoshka_prefixes", "equal to sae.sweep.", ".width (32)"],
        ),
        (
            lambda c: c["sae"]["overrides"]["world_llava"]["sweep"]["topk-w256-k8"].update(width=4),
            ["sae.overrides.world_llava.sweep.topk-w256-k8.width", ".k (8)"],
        ),
        (
            lambda c: c["sae"].update(primary="nope"),
            ["sae.primary", "'nope' is not in the sweep for world_clip"],
        ),
        (
            lambda c: c["sae"].pop("primary"),
            ["sae.primary", "name the one the verdicts judge"],
        ),
        (
            lambda c: c["sae"]["overrides"]["world_llava"].update(primary="x"),
            ["sae.overrides.world_llava.primary", "'x' is not in the sweep"],
        ),
        (
            lambda c: c["models"]["world_clip"].update(revision="abc123"),
            ["models.world_clip.revision", "not world"],
        ),
    ],
)
def test_cross_key_rules_name_the_key(mutate, expected: list[str]) -> None:
    config = copy.deepcopy(_validated())
    mutate(config)
    with pytest.raises(ConfigError) as info:
        validate_config(config, SCHEMA)
    for fragment in expected:
        assert fragment in str(info.value), str(info.value)
