"""The crossmodal stage in the smoke run: table, figures, the world LLaVA, rerun triggers, and
the paper config's DAG (COCO download, LLaVA-1.5-7B extraction on a GPU) built offline."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from snakemake_run import (
    ROOT,
    SMOKE_RESULTS,
    planned_jobs,
    run_snakemake,
    smoke_config,
    smoke_results,
)

pytestmark = pytest.mark.workflow


def test_crossmodal_table_follows_the_contract(smoke_run: Path) -> None:
    config = smoke_config()
    table = pd.read_csv(smoke_results(smoke_run) / "tables/crossmodal.csv", keep_default_na=False)
    assert {"sae", "layer", "metric", "value", "null_value", "concept"} <= set(table.columns)
    sites = {
        f"{m}/{site}/{name}"
        for m in config["mllm"]["models"]
        for site in config["sae"]["sites"][m]
        for name in config["sae"]["overrides"][m]["sweep"]
    }
    assert set(table["sae"]) == sites
    summary = table[table["concept"] == ""]
    metrics = set(summary["metric"])
    assert {"frac_alive", "frac_shared", "mean_abs_modality_score", "concept_overlap"} <= metrics
    assert {"text_only:concept_retained", "text_only:mass_retained"} <= metrics
    per_concept = table[table["concept"] != ""]
    assert len(per_concept) > 0
    assert set(per_concept["metric"]) == {"concept_overlap", "concept_top1_shared"}
    overlap = pd.to_numeric(table.loc[table["metric"] == "concept_overlap", "value"])
    assert overlap.between(0, 1).all()
    null = pd.to_numeric(summary.loc[summary["metric"] == "concept_overlap", "null_value"])
    assert null.between(0, 1).all()


def test_figures_and_the_world_llava(smoke_run: Path) -> None:
    for name in ("modality_score", "concept_overlap", "shared_latents"):
        for ext in ("png", "pdf"):
            assert (
                smoke_results(smoke_run) / f"figures/crossmodal_{name}.{ext}"
            ).stat().st_size > 0
    llava = smoke_results(smoke_run) / "models/world_llava"
    cfg = json.loads((llava / "config.json").read_text())
    assert (
        cfg["model_type"] == "llava" and cfg["vision_config"]["model_type"] == "clip_vision_model"
    )
    assert (llava / "processor_config.json").exists() and (llava / "tokenizer.json").exists()
    assert not (llava / "checkpoint").exists()
    acc = pd.read_csv(smoke_results(smoke_run) / "tables/world_llava.csv")
    assert set(acc["attribute"]) >= {"colour", "shape", "background"}
    assert acc["accuracy"].between(0, 1).all()


def test_extraction_rows_add_up(smoke_run: Path) -> None:
    from saeprobe.activations import ActivationStore

    config = smoke_config()
    for dataset in config["extract"]["datasets"]["world_llava"]:
        spec = config["datasets"][dataset]
        store = ActivationStore(
            smoke_results(smoke_run) / "activations/world_llava" / dataset / "L0_all"
        )
        tokens = store.rows()
        assert store.metadata["n_examples"] == spec["max_examples"]
        n_image = (tokens["modality"] == "image").sum()
        per_image = 0 if spec.get("text_only") else 4  # 2x2 patches per image; none alone
        assert n_image == per_image * spec["max_examples"]
        assert (tokens.loc[tokens["modality"] == "text", "word"] != "").all()
        assert store.thumbnails().shape[0] == spec["max_examples"]


MLLM_RULES = {
    "train_world_llava",
    "download_coco",
    "extract_activations",
    "train_saes",
    "crossmodal_eval",
    "crossmodal_report",
}


def test_a_crossmodal_setting_reruns_only_the_statistics(smoke_run: Path) -> None:
    """Among this stage's rules (other stages' plans are their tests' business)."""
    config = copy.deepcopy(smoke_config())
    config["mllm"]["crossmodal"]["top_m"] = 2
    jobs = planned_jobs(smoke_run, config)
    assert jobs.keys() & MLLM_RULES == {"crossmodal_eval", "crossmodal_report"}
    config = copy.deepcopy(smoke_config())
    config["sae"]["overrides"]["world_llava"]["sweep"]["topk"]["k"] = 3
    jobs = planned_jobs(smoke_run, config)
    assert jobs.keys() & MLLM_RULES == {"train_saes", "crossmodal_eval", "crossmodal_report"}
    assert jobs["train_saes"] == len(config["sae"]["sites"]["world_llava"])
    config = copy.deepcopy(smoke_config())
    config["mllm"]["world_llava"]["align_steps"] = 21
    jobs = planned_jobs(smoke_run, config)
    assert jobs.keys() & MLLM_RULES == MLLM_RULES - {"download_coco"}
    assert jobs["extract_activations"] == len(config["extract"]["datasets"]["world_llava"])


def test_paper_config_builds_its_dag_offline(tmp_path: Path) -> None:
    result = run_snakemake(
        "-n", "--configfile", str(ROOT / "configs/paper.yaml"), "--directory", str(tmp_path)
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout + result.stderr
    for rule in ("download_coco", "extract_activations", "train_saes", "crossmodal_report"):
        assert rule in out
    assert "results/paper/activations/llava15_7b/coco_pairs_train" in out
    # one annotations job; the images of each split the datasets read, each its own job
    assert out.count("rule download_coco_annotations:") == 1
    assert out.count("rule download_coco_images:") == 2
    assert "coco_split=train2017" in out and "coco_split=val2017" in out
    assert "train_world_llava" not in out
    paper = yaml.safe_load((ROOT / "configs/paper.yaml").read_text())
    assert paper["models"]["llava15_7b"]["name"] == "llava-hf/llava-1.5-7b-hf"
    assert "gpu=1" in out.replace(" ", "") or "gpu: 1" in out or "gpu=1" in out
    # a config that reads only val2017 never fetches the train images
    paper["datasets"]["coco_pairs_train"]["split"] = "val2017"
    (tmp_path / "val_only.yaml").write_text(yaml.safe_dump(paper))
    result = run_snakemake(
        "-n", "results/paper/activations/llava15_7b/coco_pairs_train",
        "--configfile", str(tmp_path / "val_only.yaml"), "--directory", str(tmp_path),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout + result.stderr
    assert "coco_split=val2017" in out and "download_coco_annotations" in out
    assert "coco_split=train2017" not in out and "data/coco/train2017" not in out


def fake_coco(root: Path, n: int = 12) -> None:
    """A COCO-layout folder: val2017/*.jpg, annotations/captions_ + instances_val2017.json."""
    from PIL import Image

    (root / "val2017").mkdir(parents=True)
    (root / "annotations").mkdir()
    colours = {"dog": (200, 40, 40), "car": (40, 40, 200)}
    images, captions, instances = [], [], []
    for i in range(n):
        name = "dog" if i % 2 == 0 else "car"
        file = f"{i:012d}.jpg"
        Image.new("RGB", (40, 30), colours[name]).save(root / "val2017" / file)
        images.append({"id": 100 + i, "file_name": file, "width": 40, "height": 30})
        captions.append({"id": 1000 + i, "image_id": 100 + i, "caption": f"a {name} on a road"})
        captions.append({"id": 5000 + i, "image_id": 100 + i, "caption": "a later caption"})
        instances.append({"id": i, "image_id": 100 + i, "category_id": 18 if i % 2 == 0 else 3})
    categories = [
        {"id": 18, "name": "dog", "supercategory": "animal"},
        {"id": 3, "name": "car", "supercategory": "vehicle"},
    ]
    (root / "annotations/captions_val2017.json").write_text(
        json.dumps({"images": images, "annotations": captions})
    )
    (root / "annotations/instances_val2017.json").write_text(
        json.dumps({"images": images, "annotations": instances, "categories": categories})
    )


def tiny_hub_llava(path: Path) -> None:
    """A tiny random LLaVA saved like a hub checkpoint (model + processor, save_pretrained)."""
    from saeprobe.rehearsal.models import save_llava

    words = ["a", "dog", "car", "on", "road", "later", "caption"]
    save_llava(path, words, layers=3, image_size=32, patch_size=8)


def test_paper_rules_run_on_a_tiny_hub_llava_and_coco(tmp_path: Path) -> None:
    """The paper config's path (source hf, COCO layout) end to end, with local stand-ins."""
    tiny_hub_llava(tmp_path / "tiny_llava")
    fake_coco(tmp_path / "coco")
    config = smoke_config()
    config["models"]["tiny"] = {
        "source": "llava",
        "name": str(tmp_path / "tiny_llava"),
        "layers": [1, 2],
        "max_image_tokens": 5,
        "batch_size": 4,
    }
    config["datasets"]["coco_a"] = {"source": "coco", "split": "val2017", "max_examples": 8}
    config["datasets"]["coco_b"] = {
        "source": "coco",
        "split": "val2017",
        "max_examples": 4,
        "offset": 8,
    }
    config["datasets"]["coco_b_text"] = {**config["datasets"]["coco_b"], "text_only": True}
    config["extract"]["datasets"]["tiny"] = ["coco_a", "coco_b", "coco_b_text"]
    config["sae"]["sites"]["tiny"] = ["L1_all", "L2_all"]
    config["sae"]["overrides"]["tiny"] = {
        "train_dataset": "coco_a",
        "eval_dataset": "coco_b",
        "normalize_modalities": True,
        "train": {"batch_size": 8, "epochs": 1, "warmup_steps": 1, "init_sample_size": 16},
        "sweep": {"topk": {"arch": "topk", "width": 16, "k": 2}},
    }
    config["mllm"] = {
        "models": ["tiny"],
        "text_only": {"tiny": "coco_b_text"},
        "crossmodal": {"top_m": 1, "n_null": 10, "min_count": 1},
        "coco": {"root": str(tmp_path / "coco")},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    result = run_snakemake(
        "--cores", "2", f"{SMOKE_RESULTS}/tables/crossmodal.csv", "--configfile", str(path),
        "--directory", str(tmp_path),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    assert "download_coco" not in result.stdout + result.stderr  # data already in place
    from saeprobe.activations import ActivationStore

    store = ActivationStore(smoke_results(tmp_path) / "activations/tiny/coco_a/L1_all")
    tokens = store.rows()
    assert (tokens["modality"] == "image").sum() == 8 * 5  # 16 patches, 5 kept per image
    text = tokens[tokens["modality"] == "text"]
    assert set(text["word"]) <= {"a", "dog", "car", "on", "road"}  # first caption per image
    assert store.dataset_info()["attributes"] == {
        "dog": "category",
        "car": "category",
        "animal": "supercategory",
        "vehicle": "supercategory",
    }
    table = pd.read_csv(smoke_results(tmp_path) / "tables/crossmodal.csv", keep_default_na=False)
    assert set(table["sae"]) == {"tiny/L1_all/topk", "tiny/L2_all/topk"}
    assert {"dog", "car"} <= set(table["concept"])
    # the text-only control: the same captions, no image tokens, through the hub loading path
    alone = ActivationStore(smoke_results(tmp_path) / "activations/tiny/coco_b_text/L1_all")
    assert set(alone.rows()["modality"]) == {"text"} and alone.dataset_info()["text_only"]
    assert {"text_only:concept_retained", "text_only:mass_retained"} <= set(table["metric"])
