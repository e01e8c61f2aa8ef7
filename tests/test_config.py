"""The config is validated before any job runs, and errors name the key and what was expected."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from snakemake_run import ROOT, run_snakemake

from saeprobe.config import ConfigError, gpus_for, validate_config

SCHEMA = ROOT / "schemas" / "config.schema.yaml"
CONFIGS = [ROOT / "config.yaml", *sorted((ROOT / "configs").glob("*.yaml"))]


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_are_valid(path: Path) -> None:
    validate_config(load(path), SCHEMA)


def test_defaults_are_filled() -> None:
    config = load(ROOT / "config.yaml")
    del config["extract"]["dtype"]
    validate_config(config, SCHEMA)
    assert config["extract"]["dtype"] == "float16"


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda c: c.update(sede=1), ["unknown key", "'sede'"]),
        (lambda c: c["extract"].update(batch_size="big"), ["extract.batch_size", "integer"]),
        (lambda c: c["models"]["world_clip"].update(tokens=["cls", "tok"]), ["tokens[1]"]),
        (lambda c: c["models"]["world_clip"].update(layer=[1]), ["'models.world_clip'", "layer"]),
        (lambda c: c.update(device="tpu"), ["'device'", "auto", "cuda"]),
        (lambda c: c["extract"].update(datasets=["nope"]), ["extract.datasets[0]", "'nope'"]),
        (lambda c: c["models"]["world_clip"].update(layers=[1, 1]), ["models.world_clip.layers"]),
        (
            lambda c: c["vision"]["ood_detection"].update(ood_datasets=["world_ood_x"]),
            ["vision.ood_detection.ood_datasets[0]", "'world_ood_x'", "extract.datasets"],
        ),
        (lambda c: c["vision"].update(models=["dino"]), ["vision.models[0]", "sae.sites"]),
        (
            lambda c: c["vision"]["semantics"].update(namers={"world_clip": "dino"}),
            ["vision.semantics.namers.world_clip", "'dino'"],
        ),
        (lambda c: c["vision"]["ontology"].update(tau=1.5), ["vision.ontology.tau"]),
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
