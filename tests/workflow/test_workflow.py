"""The pipeline end to end on the smallest config (configs/smoke.yaml), through real snakemake."""

from __future__ import annotations

import copy
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from snakemake_run import (
    ROOT,
    SMOKE,
    planned_jobs,
    run_snakemake,
    smoke_config,
    smoke_results,
)

VISION_TASKS = ("semantics", "ood_detection", "ood_generalization", "ontology")
SUMMARY_JOBS = {"report_results", "figures_index", "all"}
# the latent atlas reads every SAE and the tasks' per-latent tables
ATLAS_JOB = "atlas"
pytestmark = pytest.mark.workflow


def test_world_and_its_clip_are_made(smoke_run: Path) -> None:
    table = pd.read_csv(smoke_results(smoke_run) / "tables/world_models.csv")
    assert {"model", "attribute", "split", "accuracy", "chance", "n"} <= set(table.columns)
    assert {"shape", "colour"} <= set(table["attribute"])
    assert table["accuracy"].between(0, 1).all()
    assert (smoke_results(smoke_run) / "world/hierarchy.tsv").stat().st_size > 0
    assert (smoke_results(smoke_run) / "models/world_clip/open_clip_model.safetensors").exists()


def test_every_configured_store_is_complete(smoke_run: Path) -> None:
    """One store format for every family: vision images, text-encoder prompts, LLaVA pairs."""
    config = smoke_config()
    families = set()
    for model, datasets in config["extract"]["datasets"].items():
        spec = config["models"][model]
        for dataset in datasets:
            root = smoke_results(smoke_run) / "activations" / model / dataset
            examples = pd.read_csv(root / "examples.csv", keep_default_na=False)
            if spec["source"] == "world":
                families.add("vision")
                split = config["datasets"][dataset]["split"]
                assert len(examples) == len(
                    pd.read_csv(smoke_results(smoke_run) / f"world/{split}/manifest.csv")
                )
                sites = {f"L{layer}_{tok}" for layer in spec["layers"] for tok in spec["tokens"]}
                sites |= {"pooled"} if spec.get("pooled", True) else set()
            else:
                families.add(spec["source"])
                sites = {f"L{layer}_all" for layer in spec["layers"]}
                assert (root / "vocab.json").is_file()
            assert {p.name for p in root.iterdir() if p.is_dir()} == sites
            for site in sites:
                meta = json.loads((root / site / "metadata.json").read_text())
                assert meta["n_examples"] == len(examples) and meta["n_skipped"] == 0
                rows = sum(np.load(p, mmap_mode="r").shape[0] for p in root.glob(f"{site}/shard_*"))
                assert rows == meta["count"] == len(np.load(root / site / "example.npy"))
                if spec["source"] == "world_llava":
                    # image and text rows; a text-only store (the crossmodal control) has text
                    text_only = config["datasets"][dataset].get("text_only", False)
                    expected = {1} if text_only else {0, 1}
                    assert set(np.load(root / site / "modality.npy")) == expected
            assert not (root.parent / f"{dataset}.partial").exists()
    assert families == {"vision", "world_diffusion", "world_llava"}


def test_every_sae_of_the_sweep_has_a_quality_row(smoke_run: Path) -> None:
    config = smoke_config()
    table = pd.read_csv(smoke_results(smoke_run) / "tables/sae_quality.csv")
    contract = ["sae", "model", "layer", "arch", "width", "k", "l1", "l0", "nmse"]
    contract += ["dead_frac", "dense_frac", "downstream_recovered"]
    assert set(contract) <= set(table.columns)
    overrides = config["sae"]["overrides"]
    controls = set(config["vision"]["semantics"].get("untrained_controls", {}).values())
    expected = {
        f"{model}/{site}/{name}"
        for model, sites in config["sae"]["sites"].items()
        if model not in controls  # a control's SAEs serve its task only
        for site in sites
        for name in overrides.get(model, {}).get("sweep", config["sae"]["sweep"])
    }
    assert set(table["sae"]) == expected
    assert table["nmse"].between(0, 1.5).all()
    assert table["dead_frac"].between(0, 1).all()
    topk = table[table["arch"] == "topk"]
    assert (topk["l0"] <= topk["k"] + 1e-9).all()
    vision = table["model"] == "world_clip"
    assert table.loc[~vision, "downstream_recovered"].isna().all()
    for sae in expected:
        sae_dir = smoke_results(smoke_run) / "saes" / sae
        assert (sae_dir / "sae.safetensors").exists() and (sae_dir / "cfg.json").exists()


def test_a_finished_run_has_nothing_left_to_do(smoke_run: Path) -> None:
    result = run_snakemake(
        "--cores", "1", "--configfile", str(SMOKE), "--directory", str(smoke_run), "-n"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Nothing to be done" in result.stdout + result.stderr


def test_the_report_builds_with_every_caption(smoke_run: Path, tmp_path: Path) -> None:
    """`snakemake --report` renders every report() caption (Jinja over the config and params)
    of a finished run into one self-contained page."""
    report = tmp_path / "report.html"
    result = run_snakemake(
        "--cores", "1", "--configfile", str(SMOKE), "--directory", str(smoke_run),
        "--report", str(report),
    )  # fmt: skip
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert report.stat().st_size > 100_000


def test_lint_and_format_are_clean() -> None:
    lint = run_snakemake("--lint", "--configfile", str(SMOKE))
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert "Lints for" not in lint.stdout + lint.stderr


def test_an_sae_hyperparameter_reruns_training_and_what_follows(smoke_run: Path) -> None:
    config = copy.deepcopy(smoke_config())
    config["sae"]["sweep"]["topk"]["k"] = 5
    jobs = planned_jobs(smoke_run, config)
    sae_jobs = {"train_saes", "eval_saes", "sae_quality_table"}
    downstream = {f"vision_{task}" for task in VISION_TASKS} | {f"{t}_table" for t in VISION_TASKS}
    assert sae_jobs <= jobs.keys() <= sae_jobs | downstream | SUMMARY_JOBS | {ATLAS_JOB}
    # the world CLIP's sweep, and its untrained control, which trains the same primary SAE
    control = config["vision"]["semantics"]["untrained_controls"]["world_clip"]
    sites = config["sae"]["sites"]
    assert jobs["train_saes"] == len(sites["world_clip"]) + len(sites[control])


def test_every_family_trains_through_the_saes_target(smoke_run: Path, tmp_path: Path) -> None:
    """`snakemake saes` plans one train_saes job per (model, site) of every family."""
    path = tmp_path / "config.yaml"
    path.write_text(SMOKE.read_text())
    result = run_snakemake(
        "--cores", "1", "--configfile", str(path), "--directory", str(tmp_path), "-n", "saes"
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    stats = (result.stdout + result.stderr).split("Job stats:", 1)[1]
    n_sites = sum(len(s) for s in smoke_config()["sae"]["sites"].values())
    assert re.search(rf"^train_saes\s+{n_sites}$", stats, flags=re.M), stats
    assert re.search(r"^extract_activations\s+\d+$", stats, flags=re.M)


def test_an_evaluation_parameter_reruns_only_that_evaluation(smoke_run: Path) -> None:
    config = copy.deepcopy(smoke_config())
    config["sae"]["downstream"] = False
    jobs = planned_jobs(smoke_run, config)
    assert jobs.keys() == {"eval_saes", "sae_quality_table"} | SUMMARY_JOBS


def test_a_vision_task_parameter_reruns_only_that_task(smoke_run: Path) -> None:
    config = copy.deepcopy(smoke_config())
    config["vision"]["ontology"]["tau"] = 0.8
    jobs = planned_jobs(smoke_run, config)
    assert jobs.keys() == {"vision_ontology", "ontology_table", ATLAS_JOB} | SUMMARY_JOBS


def test_a_comment_in_a_rule_file_reruns_nothing(smoke_run: Path, tmp_path: Path) -> None:
    workflow = tmp_path / "workflow"
    workflow.mkdir()
    for part in ("Snakefile", "rules", "scripts", "schemas", "report", "config.yaml"):
        source = ROOT / part
        copy_part = shutil.copytree if source.is_dir() else shutil.copy
        copy_part(source, workflow / part)
    rule_file = workflow / "rules" / "sae.smk"
    rule_file.write_text("# an edited comment\n" + rule_file.read_text())
    assert planned_jobs(smoke_run, smoke_config(), workflow / "Snakefile") == {}


def test_vision_tables_follow_the_output_contract(smoke_run: Path) -> None:
    contract = {
        "semantics": {"sae", "latent", "name", "name_score", "purity", "top_label"},
        "ood_detection": {
            "model",
            "features",
            "score",
            "id_dataset",
            "ood_dataset",
            "auroc",
            "fpr95",
        },
        "ood_generalization": {"model", "features", "train_dataset", "test_dataset", "accuracy"},
        "ontology": {"model", "layer", "features", "metric", "value"},
    }
    config = smoke_config()
    n_saes = len(config["sae"]["sweep"])
    for task, columns in contract.items():
        table = pd.read_csv(smoke_results(smoke_run) / f"tables/{task}.csv")
        assert columns <= set(table.columns), task
        assert set(table["features"]) >= {"raw"} and table["features"].nunique() >= n_saes + 1
    ood = pd.read_csv(smoke_results(smoke_run) / "tables/ood_detection.csv")
    assert ood["auroc"].between(0, 1).all() and ood["fpr95"].between(0, 1).all()
    onto = pd.read_csv(smoke_results(smoke_run) / "tables/ontology.csv")
    assert {"raw", "pca", "random"} <= set(onto["features"])
    for name in ("semantics_purity", "ood_detection_auroc", "ontology_coverage", "sae_quality"):
        for ext in ("png", "pdf"):
            assert (smoke_results(smoke_run) / f"figures/{name}.{ext}").stat().st_size > 1000
    summary = (smoke_results(smoke_run) / "RESULTS.md").read_text()
    assert "SAE features recover the model's ontology" in summary
    assert (smoke_results(smoke_run) / "figures/index.html").read_text().count("<figure>") >= 8
