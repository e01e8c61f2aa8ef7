"""Diffusion stages of the smoke run: tables per the output contract, figures, SAE layout."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from snakemake_run import ROOT, SMOKE_RESULTS, smoke_results

pytestmark = pytest.mark.workflow


def smoke_config() -> dict:
    return yaml.safe_load((ROOT / "configs" / "smoke.yaml").read_text())


def smoke_diffusion() -> dict:
    return smoke_config()["diffusion"]


def test_steering_table_follows_the_contract(smoke_run: Path) -> None:
    cfg = smoke_diffusion()
    table = pd.read_csv(smoke_results(smoke_run) / "tables/steering.csv")
    contract = {"sae", "latent", "concept", "strength", "seed", "effect", "preservation"}
    assert contract | {"prompt", "colour_effect"} <= set(table.columns)
    n = len(cfg["steering"]["concepts"]) * len(cfg["steering"]["strengths"])
    n *= len(cfg["steering"]["prompts"]) * len(cfg["steering"]["seeds"])
    assert len(table) == n
    assert set(table["concept"]) == set(cfg["steering"]["concepts"])
    zero = table[table["strength"] == 0]
    assert (zero["effect"].abs() < 1e-6).all() and (zero["preservation"] > 0.9999).all()
    assert table["preservation"].between(-1, 1 + 1e-6).all()
    assert table["sae"].str.startswith(f"{cfg['model']}/L0_all/").all()
    monotone = pd.read_csv(smoke_results(smoke_run) / "tables/steering_monotone.csv")
    assert set(monotone["concept"]) == set(cfg["steering"]["concepts"])
    assert (
        monotone["n_units"] == len(cfg["steering"]["prompts"]) * len(cfg["steering"]["seeds"])
    ).all()


def test_attributes_table_follows_the_contract(smoke_run: Path) -> None:
    cfg = smoke_diffusion()
    table = pd.read_csv(smoke_results(smoke_run) / "tables/attributes.csv")
    assert {"sae", "latent", "attribute", "effect", "consistency", "rank"} <= set(table.columns)
    assert 1 <= len(table) <= cfg["attributes"]["top_n"]
    assert table["consistency"].between(0, 1).all()
    ranked = table.dropna(subset=["rank"]).sort_values("rank")
    assert ranked["kept"].all()
    assert list(ranked["rank"]) == list(range(1, len(ranked) + 1))


def test_diffusion_figures_models_and_saes_are_written(smoke_run: Path) -> None:
    cfg = smoke_diffusion()
    for name in (
        "steering_grid",
        "steering_effect",
        "steering_preservation",
        "attributes_grid",
        "world_diffusion_samples",
    ):
        for ext in ("png", "pdf"):
            assert (smoke_results(smoke_run) / f"figures/{name}.{ext}").stat().st_size > 1000
    model_dir = smoke_results(smoke_run) / "models" / cfg["model"]
    index = json.loads((model_dir / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    assert not (model_dir.parent / f"{cfg['model']}.partial").exists()
    sae = smoke_config()["sae"]["overrides"][cfg["model"]]
    for name in sae["sweep"]:
        sae_dir = smoke_results(smoke_run) / "saes" / cfg["model"] / "L0_all" / name
        assert (sae_dir / "sae.safetensors").exists() and (sae_dir / "metrics.json").exists()
    # the two prompt datasets split one corpus of draws: together all of them
    sizes = []
    for part in ("train_dataset", "eval_dataset"):
        root = smoke_results(smoke_run) / "activations" / cfg["model"] / sae[part]
        meta = json.loads((root / "L0_all" / "metadata.json").read_text())
        sizes.append(len(pd.read_csv(root / "examples.csv")))
        assert meta["n_examples"] == sizes[-1] and meta["dim"] > 0
    assert sum(sizes) == smoke_config()["datasets"][sae["train_dataset"]]["n_prompts"]


def test_paper_style_rules_run_on_a_local_diffusers_pipeline(tmp_path: Path) -> None:
    """The paper config's path (source diffusers, downloaded corpus, open_clip scorer, custom
    vocabulary) through real snakemake, on a tiny pipeline saved with save_pretrained and a
    corpus downloaded over HTTP from a local server."""
    import copy
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    import torch
    from snakemake_run import run_snakemake

    from saeprobe.world.clip import build_world_clip
    from saeprobe.world.config import WorldClipConfig
    from saeprobe.world.diffusion import (
        WorldDiffusionConfig,
        build_pipeline,
        build_unet,
        build_vae,
        save_pipeline,
    )
    from saeprobe.world.hf_text import build_tokenizer, to_clip_text_model

    clip_cfg = WorldClipConfig.from_dict(
        {"embed_dim": 16, "vision_width": 16, "vision_head_width": 8, "vision_layers": 1,
         "text_width": 32, "text_layers": 2, "context_length": 16}
    )  # fmt: skip
    clip, _, _ = build_world_clip(clip_cfg, 32)
    cfg = WorldDiffusionConfig(vae_channels=(8, 16), unet_channels=(16, 32), attention_head_dim=4)
    torch.manual_seed(0)
    pipe = build_pipeline(
        build_vae(cfg, 16),
        to_clip_text_model(clip),
        build_tokenizer(16),
        build_unet(cfg, 8, 32),
        cfg,
    )
    save_pipeline(pipe, tmp_path / "hub" / "tiny-sd")
    words = ["red", "blue", "dog", "cat", "house", "tree"]
    prompts = [f"a {a} {b} in the park" for a in words for b in words]
    pd.DataFrame({"prompt": prompts}).to_csv(tmp_path / "prompts.csv", index=False)
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    config = copy.deepcopy(yaml.safe_load((ROOT / "configs" / "smoke.yaml").read_text()))
    paper = yaml.safe_load((ROOT / "configs" / "paper.yaml").read_text())["diffusion"]
    config["models"]["tiny_sd"] = {
        "source": "diffusers",
        "name": str(tmp_path / "hub" / "tiny-sd"),
        "layers": [0, 1],
        "tokens": "all",
    }
    corpus = {
        "source": "prompts",
        "download": {"url": f"http://127.0.0.1:{server.server_address[1]}/prompts.csv"},
        "file": "prompts.csv",
        "column": "prompt",
        "n_prompts": 30,
    }
    for part in ("train", "heldout"):
        holdout = {"fraction": 0.2, "part": part}
        config["datasets"][f"prompts_{part}"] = {**corpus, "holdout": holdout}
    config["extract"]["datasets"]["tiny_sd"] = ["prompts_train", "prompts_heldout"]
    config["sae"]["sites"]["tiny_sd"] = ["L0_all", "L1_all"]
    config["sae"]["overrides"]["tiny_sd"] = {
        **config["sae"]["overrides"].pop("world_diffusion"),
        "train_dataset": "prompts_train",
        "eval_dataset": "prompts_heldout",
    }
    for key in ("world_diffusion",):
        del config["models"][key], config["extract"]["datasets"][key], config["sae"]["sites"][key]
    d = config["diffusion"]
    d.pop("world_model")
    d.update(
        model="tiny_sd",
        scorer={"source": "open_clip", "name": "RN50"},
        generation={"steps": 2, "batch_size": 16, "height": 16},
    )
    d["steering"]["concepts"] = {"red": "a photo of something red", "dog": "a photo of a dog"}
    d["attributes"]["vocabulary"] = dict(list(paper["attributes"]["vocabulary"].items())[:4])
    (tmp_path / "paper_like.yaml").write_text(yaml.safe_dump(config))
    result = run_snakemake(
        "--cores", "2", "--configfile", str(tmp_path / "paper_like.yaml"),
        "--directory", str(tmp_path), f"{SMOKE_RESULTS}/tables/steering.csv",
        f"{SMOKE_RESULTS}/tables/attributes.csv",
    )  # fmt: skip
    server.shutdown()
    assert result.returncode == 0, result.stderr[-4000:]
    assert "train_world_diffusion" not in result.stdout + result.stderr
    assert (smoke_results(tmp_path) / "data/prompts/prompts.csv.sha256").is_file()
    steering = pd.read_csv(smoke_results(tmp_path) / "tables/steering.csv")
    assert set(steering["sae"].str.split("/").str[1]) == {"L0_all", "L1_all"}
    assert steering["colour_effect"].isna().all()  # no direct colour measurement off the world
    attributes = pd.read_csv(smoke_results(tmp_path) / "tables/attributes.csv")
    assert set(attributes["attribute"]) <= set(d["attributes"]["vocabulary"])
