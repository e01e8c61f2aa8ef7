"""Unit tests of saeprobe.diffusion and saeprobe.world.hf_text on tiny locally built models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline, StableDiffusionPipeline
from tiny_backbones import collect_prompts

from saeprobe.diffusion.hooks import capture, latent_direction, steer, token_mask
from saeprobe.diffusion.metrics import colour_fractions, pixel_mse, preservation
from saeprobe.diffusion.pipeline import encode, generate, load_pipeline, tokenize_prompts
from saeprobe.diffusion.steering import GenSettings, _embeds, word_contrast
from saeprobe.sae import SAEConfig, build_sae
from saeprobe.sites import site_name
from saeprobe.world.clip import CaptionSampler, build_world_clip
from saeprobe.world.config import WorldClipConfig
from saeprobe.world.diffusion import (
    WorldDiffusionConfig,
    build_pipeline,
    build_unet,
    build_vae,
    save_pipeline,
)
from saeprobe.world.hf_text import (
    build_tokenizer,
    encoder_layers,
    to_clip_text_model,
    to_hf_text_model,
    tokenize,
)

COLOURS = ["red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink"]
SHAPES = ["triangle", "square", "circle", "star", "heart"]


def world_phrases() -> list[str]:
    """Captions in every phrasing the world's models train on."""
    out = []
    for photo in (0, 1):
        for c in [None, *COLOURS]:
            for noun in [*SHAPES, "round shape", "shape"]:
                for b in [None, "plain", "striped", "dotted"]:
                    out.append(CaptionSampler.phrase(photo, c, noun, b))
    return out


@pytest.fixture(scope="module")
def tiny_clip():
    cfg = WorldClipConfig.from_dict(
        {
            "embed_dim": 16,
            "vision_width": 16,
            "vision_layers": 1,
            "vision_head_width": 8,
            "patch_size": 16,
            "text_width": 32,
            "text_layers": 2,
            "text_heads": 4,
            "context_length": 16,
        }
    )
    model, tokenizer, _ = build_world_clip(cfg, 32)
    with torch.no_grad():  # random-init towers: make the projection and final norm non-trivial
        model.ln_final.weight.uniform_(0.5, 1.5)
        model.ln_final.bias.normal_(0, 0.1)
    return model.eval(), tokenizer


@pytest.fixture(scope="module")
def tiny_pipe(tiny_clip, tmp_path_factory):
    clip, _ = tiny_clip
    cfg = WorldDiffusionConfig(vae_channels=(8, 16), unet_channels=(16, 32), attention_head_dim=4)
    vae = build_vae(cfg, 16)
    unet = build_unet(cfg, 8, 32)
    pipe = build_pipeline(vae, to_clip_text_model(clip), build_tokenizer(16), unet, cfg)
    out = tmp_path_factory.mktemp("pipe") / "world_diffusion"
    save_pipeline(pipe, out)
    return pipe, out


def test_converted_text_tower_equals_open_clip(tiny_clip) -> None:
    clip, oc_tok = tiny_clip
    captions = [*world_phrases(), "A Photo of  a RED star", ""]
    hf_tok = build_tokenizer(16)
    ids = tokenize(hf_tok, captions)
    assert torch.equal(ids, oc_tok(captions))
    hf = to_hf_text_model(clip)
    with torch.no_grad():
        want = clip.encode_text(oc_tok(captions))
        got = hf(input_ids=ids).text_embeds
    assert want.abs().max() > 0.1
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_clip_text_model_has_the_hookable_layers(tiny_clip) -> None:
    clip, _ = tiny_clip
    model = to_clip_text_model(clip)
    assert len(encoder_layers(model)) == 2
    ids = tokenize(build_tokenizer(16), ["a red star"])
    with torch.no_grad():
        out = model(input_ids=ids).last_hidden_state
    assert out.shape == (1, 16, 32)


def test_pipeline_round_trip_through_diffusion_pipeline(tiny_pipe) -> None:
    pipe, path = tiny_pipe
    assert (path / "model_index.json").is_file()
    assert not list(path.rglob("*.bin")), "weights must be safetensors"
    loaded = load_pipeline(path, "cpu")
    assert isinstance(loaded, StableDiffusionPipeline)
    assert isinstance(DiffusionPipeline.from_pretrained(path), StableDiffusionPipeline)
    assert loaded.safety_checker is None
    pipe.set_progress_bar_config(disable=True)
    ids, _ = tokenize_prompts(pipe, ["a red star", "a shape"])
    nids, _ = tokenize_prompts(pipe, ["", ""])
    a = generate(pipe, encode(pipe, ids), encode(pipe, nids), [3, 4], 2, 3.0)
    b = generate(loaded, encode(loaded, ids), encode(loaded, nids), [3, 4], 2, 3.0)
    assert a.shape == (2, 16, 16, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    c = generate(loaded, encode(loaded, ids[1:]), encode(loaded, nids[1:]), [4], 2, 3.0)
    np.testing.assert_array_equal(c[0], b[1])  # an image depends on its seed, not its batch


def test_token_mask_selects_prompt_tokens() -> None:
    am = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 0, 0, 0, 0]])
    assert token_mask(am, "all").tolist() == [
        [False, True, True, True, False, False],
        [False, True, False, False, False, False],
    ]
    assert token_mask(am, "eot").nonzero().tolist() == [[0, 3], [1, 1]]
    assert token_mask(am, [1, 2]).nonzero().tolist() == [[0, 1], [0, 2], [1, 1]]
    with pytest.raises(ValueError):
        token_mask(am, [9])
    assert token_mask(am, "sequence").all()  # start token and padding too
    with pytest.raises(ValueError, match="sequence"):
        token_mask(am, "padding")


def test_steering_the_whole_sequence_changes_the_padding_states() -> None:
    d, ctx = 4, 6
    layer = torch.nn.Identity()
    encoder = torch.nn.Module()
    encoder.text_model = torch.nn.Module()
    encoder.text_model.encoder = torch.nn.Module()
    encoder.text_model.encoder.layers = torch.nn.ModuleList([layer])
    am = torch.tensor([[1, 1, 1, 0, 0, 0]])
    h = torch.zeros(1, ctx, d)
    delta = torch.ones(d)
    for tokens, changed in (("all", [1, 2]), ("sequence", list(range(ctx)))):
        with steer(encoder, 0, token_mask(am, tokens), delta=delta):
            out = layer(h)
        moved = (out != 0).any(dim=-1)[0].nonzero()[:, 0].tolist()
        assert moved == changed, tokens


def _sae(d: int, width: int = 8) -> torch.nn.Module:
    sae = build_sae(SAEConfig(arch="topk", width=width, k=2), d)
    sae.initialize(seed=0, input_scale=0.7)
    return sae.eval()


def test_add_hook_changes_states_by_strength_times_direction_at_chosen_tokens(tiny_pipe) -> None:
    pipe, _ = tiny_pipe
    te = pipe.text_encoder
    ids, am = tokenize_prompts(pipe, ["a red star", "a shape on a plain background"])
    sae = _sae(32)
    delta = 2.5 * latent_direction(sae, 3)
    mask = token_mask(am, "all")
    with torch.no_grad(), capture(te, [0, 1]) as clean:
        te(input_ids=ids)
        clean = {k: v.clone() for k, v in clean.items()}
    with torch.no_grad(), steer(te, 0, mask, delta=delta), capture(te, [0]) as hooked:
        te(input_ids=ids)
    diff = hooked[0] - clean[0]
    expected = mask[..., None].float() * delta
    torch.testing.assert_close(diff, expected, atol=1e-5, rtol=0)
    assert diff[~mask].abs().max() == 0
    # the hook is removed on exit
    with torch.no_grad(), capture(te, [0]) as again:
        te(input_ids=ids)
    torch.testing.assert_close(again[0], clean[0])


def test_clamp_hook_sets_the_latent_and_keeps_the_error(tiny_pipe) -> None:
    pipe, _ = tiny_pipe
    te = pipe.text_encoder
    ids, am = tokenize_prompts(pipe, ["a red star"])
    sae = _sae(32)
    mask = token_mask(am, "eot")
    with torch.no_grad(), capture(te, [0]) as clean:
        te(input_ids=ids)
        h = clean[0].clone()
    with torch.no_grad(), steer(te, 0, mask, clamp=(sae, 5, 3.0)), capture(te, [0]) as hooked:
        te(input_ids=ids)
    x = h[mask]
    code = sae.encode(x)[:, 5]
    want = x + (3.0 - code)[:, None] * sae.W_dec[5] / sae.input_scale
    torch.testing.assert_close(hooked[0][mask], want.detach(), atol=1e-5, rtol=0)
    torch.testing.assert_close(hooked[0][~mask], h[~mask])


@pytest.mark.parametrize("branch", ["cond", "both"])
def test_steering_acts_only_on_the_chosen_branch(tiny_pipe, branch: str) -> None:
    pipe, _ = tiny_pipe
    sae = _sae(32)
    gen = GenSettings(layer=1, branch=branch)
    cond0, unc0 = _embeds(pipe, ["a star"], gen)
    cond1, unc1 = _embeds(pipe, ["a star"], gen, sae, 2, 4.0)
    assert (cond1 - cond0).abs().max() > 1e-3
    if branch == "cond":
        torch.testing.assert_close(unc1, unc0)
    else:
        assert (unc1 - unc0).abs().max() > 1e-3


def test_collect_returns_one_row_per_chosen_token(tiny_pipe) -> None:
    pipe, pipe_dir = tiny_pipe
    prompts = ["a red star", "a blue circle on a plain background"]
    acts, table = collect_prompts(pipe_dir, prompts, [0, 1], "all", batch_size=1)
    _, am = tokenize_prompts(pipe, prompts)
    n = int(token_mask(am, "all").sum())
    assert acts[0].shape == (n, 32) and acts[1].shape == (n, 32)
    assert table["prompt"].tolist().count(0) == 4  # a, red, star, <eot>
    assert table.loc[table["prompt"] == 0, "token"].tolist()[1] == "red</w>"
    assert site_name(10, "all") == "L10_all" and site_name(3, [1, 2]) == "L3_p1-2"


def test_word_contrast_picks_the_latent_that_fires_on_the_word() -> None:
    prompts = ["a red star", "a blue star", "a red circle", "a circle"]
    codes = np.zeros((4, 3), np.float32)
    codes[[0, 2], 1] = 2.0  # latent 1 fires on "red"
    codes[:, 2] = 1.0  # latent 2 on everything
    contrast = word_contrast(codes, prompts, ["red", "star"])
    assert contrast[0].argmax() == 1 and contrast[0, 1] == pytest.approx(2.0)
    assert contrast[0, 2] == 0


def test_colour_fraction_preservation_and_mse_on_constructed_images() -> None:
    grey = np.full((2, 8, 8, 3), 90, np.uint8)
    img = grey.copy()
    img[0, :4, :4] = (220, 30, 30)  # a quarter red
    img[1, :, :2] = (40, 70, 240)  # a quarter blue
    frac = colour_fractions(img, {"red": (220, 30, 30), "blue": (40, 70, 240)})
    np.testing.assert_allclose(frac["red"], [0.25, 0.0])
    np.testing.assert_allclose(frac["blue"], [0.0, 0.25])
    np.testing.assert_allclose(colour_fractions(grey, {"red": (220, 30, 30)})["red"], [0, 0])
    emb = torch.randn(3, 5)
    torch.testing.assert_close(preservation(emb, emb), torch.ones(3))
    torch.testing.assert_close(preservation(emb, -emb), -torch.ones(3))
    mse = pixel_mse(img, grey)
    assert mse[0] > 0 and pixel_mse(grey, grey).max() == 0


def test_diffusion_config_is_validated_with_named_keys() -> None:
    from pathlib import Path

    import yaml

    from saeprobe.config import ConfigError, validate_config

    root = Path(__file__).resolve().parents[2]
    schema = root / "schemas" / "config.schema.yaml"
    for name in ("config.yaml", "configs/smoke.yaml", "configs/paper.yaml"):
        config = yaml.safe_load((root / name).read_text())
        validate_config(config, schema)
        assert config["diffusion"]["generation"]["steps"] >= 1
    config = yaml.safe_load((root / "config.yaml").read_text())
    config["diffusion"]["steering"]["grid_concepts"] = ["violet"]
    with pytest.raises(ConfigError, match=r"diffusion\.steering\.grid_concepts\[0\]"):
        validate_config(config, schema)
    config = yaml.safe_load((root / "config.yaml").read_text())
    config["diffusion"]["world_model"]["unet_stepz"] = 3
    with pytest.raises(ConfigError, match="unet_stepz"):
        validate_config(config, schema)
    config = yaml.safe_load((root / "configs/paper.yaml").read_text())
    del config["models"]["sd15"]["name"]
    with pytest.raises(ConfigError, match=r"models\.sd15\.name"):
        validate_config(config, schema)
    config = yaml.safe_load((root / "configs/paper.yaml").read_text())
    config["diffusion"]["model"] = "clip_vitl14"
    with pytest.raises(ConfigError, match=r"diffusion\.model.*not a text-to-image model"):
        validate_config(config, schema)


def test_prompt_corpus_from_a_coco_style_zip_and_a_csv(tmp_path) -> None:
    import json
    import zipfile

    import pandas as pd

    from saeprobe.data.prompts import corpus_prompts as load_prompt_corpus

    captions = [{"caption": f"A  dog number {i} "} for i in range(30)] + [
        {"caption": "A dog number 3"}
    ]
    path = tmp_path / "ann.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("annotations/captions_train2017.json", json.dumps({"annotations": captions}))
    got = load_prompt_corpus(path, "caption", "annotations/captions_train2017.json", 10, 0)
    assert len(got) == 10 and len(set(got)) == 10
    assert all(p.startswith("A dog number") and "  " not in p for p in got)
    assert got == load_prompt_corpus(path, "caption", "annotations/captions_train2017.json", 10, 0)
    csv = tmp_path / "prompts.csv"
    pd.DataFrame({"prompt": ["a cat", "a dog", "a cat"]}).to_csv(csv, index=False)
    assert load_prompt_corpus(csv, "prompt", None, 100, 0) == ["a cat", "a dog"]


def test_vae_training_resumes_after_a_kill_to_the_same_weights(tmp_path) -> None:
    from saeprobe.world import diffusion as dw

    cfg = WorldDiffusionConfig(
        vae_channels=(8, 16), vae_steps=4, vae_batch_size=4, checkpoint_every=2, warmup_steps=1
    )
    pixels = torch.rand(16, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    cpu = torch.device("cpu")
    full, _ = dw.train_vae(cfg, pixels, tmp_path / "a", cpu)

    def die(stage: str, done: int) -> None:
        if done == 2:
            raise KeyboardInterrupt  # a kill right after the first checkpoint

    with pytest.raises(KeyboardInterrupt):
        dw.train_vae(cfg, pixels, tmp_path / "b", cpu, callback=die)
    marker = tmp_path / "b" / "vae" / "step_000000002.json"
    assert marker.read_text().count('"step": 2')
    resumed, _ = dw.train_vae(cfg, pixels, tmp_path / "b", cpu)
    for (name, a), (_, b) in zip(
        full.state_dict().items(), resumed.state_dict().items(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    assert full.config.scaling_factor == resumed.config.scaling_factor
    # a checkpoint made with other settings is discarded, not resumed
    other = WorldDiffusionConfig(**{**cfg.__dict__, "vae_lr": 0.01})
    last = tmp_path / "b" / "vae" / "step_000000004.json"
    before = last.read_text()
    fresh, _ = dw.train_vae(other, pixels, tmp_path / "c", cpu)
    again, _ = dw.train_vae(other, pixels, tmp_path / "b", cpu)
    assert last.read_text() != before
    for a, b in zip(fresh.state_dict().values(), again.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_another_run_draws_other_weights_and_run_0_is_the_config_seed(tmp_path) -> None:
    from saeprobe.world import diffusion as dw

    cfg = WorldDiffusionConfig(vae_channels=(8, 16), vae_steps=2, vae_batch_size=4, seed=3)
    pixels = torch.rand(16, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    cpu = torch.device("cpu")

    def weights(c: WorldDiffusionConfig, work: str) -> list[torch.Tensor]:
        return list(dw.train_vae(c, pixels, tmp_path / work, cpu)[0].state_dict().values())

    base = weights(cfg, "a")
    assert cfg.train_seed == 3
    same = weights(WorldDiffusionConfig(**{**cfg.__dict__, "run": 0}), "b")
    other = weights(WorldDiffusionConfig(**{**cfg.__dict__, "run": 1}), "c")
    assert all(torch.equal(a, b) for a, b in zip(base, same, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(base, other, strict=True))
    # another run is another training: it never resumes the first run's checkpoints
    run_1 = WorldDiffusionConfig(**{**cfg.__dict__, "run": 1})
    assert dw.stage_fingerprint(cfg, "vae", 16) != dw.stage_fingerprint(run_1, "vae", 16)


def test_holdout_parts_split_a_corpus_disjointly(tmp_path) -> None:
    import pandas as pd

    from saeprobe.data.prompts import load_prompts

    prompts = [f"prompt number {i}" for i in range(200)]
    pd.DataFrame({"caption": prompts}).to_csv(tmp_path / "corpus.csv", index=False)
    spec = {"source": "prompts", "path": str(tmp_path / "corpus.csv"), "column": "caption"}
    spec["n_prompts"] = 150
    parts = {
        part: load_prompts({**spec, "holdout": {"fraction": 0.2, "part": part}}, seed=3)
        for part in ("train", "heldout")
    }
    assert not set(parts["train"]) & set(parts["heldout"])
    assert sorted(parts["train"] + parts["heldout"]) == sorted(load_prompts(spec, seed=3))
    assert 15 <= len(parts["heldout"]) <= 45  # about 20% of 150
    assert parts["train"] == load_prompts(
        {**spec, "holdout": {"fraction": 0.2, "part": "train"}}, 3
    )


def test_v_target_recovers_the_clean_latent_and_min_snr_caps_the_weight() -> None:
    from saeprobe.world.diffusion import diffusion_target, ema_update, min_snr_weights

    gen = torch.Generator().manual_seed(0)
    z0, noise = torch.randn(4, 2, 3, 3, generator=gen), torch.randn(4, 2, 3, 3, generator=gen)
    a = torch.tensor([0.999, 0.9, 0.5, 0.01]).view(-1, 1, 1, 1)
    zt = a.sqrt() * z0 + (1 - a).sqrt() * noise
    v = diffusion_target(z0, noise, a, "v_prediction")
    torch.testing.assert_close(a.sqrt() * zt - (1 - a).sqrt() * v, z0)
    assert diffusion_target(z0, noise, a, "epsilon") is noise
    w = min_snr_weights(a.view(-1), 5.0, "v_prediction")
    snr = a.view(-1) / (1 - a.view(-1))
    torch.testing.assert_close(w, snr.clamp(max=5.0) / (snr + 1))
    assert w[0] < w[-1] and (min_snr_weights(a.view(-1), 0.0, "epsilon") == 1).all()
    model, ema = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    before = ema.weight.detach().clone()
    ema_update(ema, model, 0.99, step=1000)
    torch.testing.assert_close(ema.weight, 0.99 * before + 0.01 * model.weight.detach())


def test_timestep_power_below_one_draws_the_noisy_end_more_often() -> None:
    from saeprobe.world.diffusion import train_timesteps

    def draw(power: float) -> torch.Tensor:
        return train_timesteps(20000, 1000, power, torch.Generator().manual_seed(0))

    uniform, biased = draw(1.0), draw(0.5)
    for t in (uniform, biased):
        assert t.dtype == torch.int64 and int(t.min()) >= 0 and int(t.max()) <= 999
    assert abs((uniform >= 500).float().mean().item() - 0.5) < 0.02
    # u^0.5 >= 0.5 when u >= 0.25: three quarters of the draws land in the noisier half
    assert abs((biased >= 500).float().mean().item() - 0.75) < 0.02
