"""The latent atlas on tiny inputs: statistics, roles and the pages it writes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from saeprobe.atlas.build import AtlasSae, AtlasSettings, build_atlas, token_texts
from saeprobe.atlas.roles import latent_roles
from saeprobe.atlas.stats import CodeChunk, accumulate, decoder_neighbours, top_token_codes
from saeprobe.sae.config import SAEConfig
from saeprobe.sae.io import save_sae
from saeprobe.sae.models import build_sae


def test_accumulate_counts_frequency_mean_and_top_examples_per_example() -> None:
    # example 0 has two rows (tokens), example 1 one, example 2 two; 3 latents
    codes = np.array(
        [[1.0, 0, 0], [3.0, 0, 0], [0, 2.0, 0], [2.0, 0.5, 0], [0, 0, 0]], dtype=np.float32
    )
    example = np.array([0, 0, 1, 2, 2])
    chunks = [CodeChunk(codes[:2], example[:2]), CodeChunk(codes[2:], example[2:])]
    stats = accumulate(chunks, width=3, top_n=2)
    assert stats.rows == 5
    np.testing.assert_allclose(stats.frequency, [3 / 5, 2 / 5, 0])
    np.testing.assert_allclose(stats.mean_activation, [2.0, 1.25, 0])
    assert stats.alive.tolist() == [True, True, False]
    # an example counts once, by its highest row: latent 0's top examples are 0 (3.0), 2 (2.0)
    assert stats.top_examples[0].tolist() == [0, 2]
    np.testing.assert_allclose(stats.top_values[0], [3.0, 2.0])
    assert stats.top_examples[1].tolist() == [1, 2]
    assert stats.histogram[0].sum() == 3 and stats.histogram[2].sum() == 0
    tok = top_token_codes(chunks, stats.top_examples, [0])
    np.testing.assert_allclose(tok[(0, 0)], [1.0, 3.0])
    np.testing.assert_allclose(tok[(0, 2)], [2.0, 0.0])


def test_accumulate_rejects_examples_out_of_order() -> None:
    chunk = CodeChunk(np.ones((3, 2), np.float32), np.array([1, 0, 1]))
    with pytest.raises(ValueError, match="contiguous"):
        accumulate([chunk], width=2, top_n=1)


def test_decoder_neighbours_find_the_closest_direction_not_itself() -> None:
    w = np.array([[1.0, 0, 0], [0.9, 0.1, 0], [0, 0, 1.0], [0, 0.2, 1.0]])
    idx, cos = decoder_neighbours(w, 1, chunk=3)
    assert idx[:, 0].tolist() == [1, 0, 3, 2]
    assert (cos[:, 0] < 1.0).all() and (cos[:, 0] > 0.9).all()


def test_tokens_are_shown_as_words() -> None:
    assert token_texts(["a</w>", "semic", "ircle</w>"]) == ["a ", "semic", "ircle "]
    assert token_texts(["\u2581a", "\u2581sq", "uare"]) == [" a", " sq", "uare"]
    assert token_texts(["", "", "a", "star"]) == ["", "", "a ", "star "]


def test_roles_come_only_from_the_tables_about_this_sae(tmp_path: Path) -> None:
    semantics = tmp_path / "semantics.csv"
    pd.DataFrame(
        {
            "sae": ["m/L1/a", "m/L1/a", "m/L1/b"],
            "latent": [0, 1, 0],
            "name": ["circle", "", "star"],
            "name_score": [0.5, np.nan, 0.7],
            "purity": [0.9, np.nan, 0.8],
            "top_label": ["circle", "", "star"],
        }
    ).to_csv(semantics, index=False)
    steering = tmp_path / "steering.csv"
    pd.DataFrame(
        {
            "sae": ["t/L0/c"] * 4,
            "latent": [3, 3, 3, 3],
            "concept": ["red"] * 4,
            "strength": [1.0, 1.0, 4.0, 4.0],
            "effect": [0.0, 0.1, 0.2, 0.4],
        }
    ).to_csv(steering, index=False)
    attributes = tmp_path / "attributes.csv"
    pd.DataFrame(
        {"sae": "t/L0/c", "latent": [3, 5], "attribute": ["red", "star"], "effect": [0.3, 0.0],
         "consistency": [0.9, 0.2], "kept": [True, False], "rank": [1, np.nan]}
    ).to_csv(attributes, index=False)  # fmt: skip
    tables = {"semantics": [semantics], "steering": [steering], "attributes": [attributes]}
    roles = latent_roles("m/L1/a", "m", "L1", "a", tables)
    assert roles.loc[0, "name"] == "circle" and roles.loc[0, "purity"] == 0.9
    assert pd.isna(roles.loc[1, "name"])
    assert "steering_effect" not in roles and "attribute" not in roles
    text = latent_roles("t/L0/c", "t", "L0", "c", tables)
    assert text.loc[3, "steering_effect"] == pytest.approx(0.3)  # mean at the largest strength
    assert pd.isna(text.loc[5, "steering_effect"]) and "purity" not in text
    # a text-encoder latent is named by the attribute discovery kept, not by one it dropped
    assert text.loc[3, "name"] == "red" and text.loc[3, "name_score"] == 0.9
    assert text.loc[5, "attribute"] == "star" and pd.isna(text.loc[5, "name"])


def write_store(
    site_dir: Path,
    x: np.ndarray,
    example: np.ndarray,
    examples: pd.DataFrame,
    token_id: np.ndarray | None = None,
    vocab: dict[int, str] | None = None,
) -> None:
    """A minimal activation store (saeprobe.activations.store's layout)."""
    site_dir.mkdir(parents=True)
    np.save(site_dir / "shard_0.npy", x.astype(np.float32))
    np.save(site_dir / "example.npy", example.astype(np.int64))
    columns = ["example"]
    if token_id is not None:
        np.save(site_dir / "token_id.npy", token_id.astype(np.int64))
        columns.append("token_id")
        (site_dir.parent / "vocab.json").write_text(json.dumps(vocab))
    meta = {
        "dim": x.shape[1], "dtype": "float32", "site": site_dir.name, "layer": 0,
        "mean": x.mean(axis=0).tolist(), "count": len(x), "columns": columns,
        "shards": [{"file": "shard_0.npy", "rows": len(x)}],
    }  # fmt: skip
    (site_dir / "metadata.json").write_text(json.dumps(meta))
    examples.to_csv(site_dir.parent / "examples.csv", index=False)


def tiny_sae(path: Path, d_in: int, width: int, seed: int) -> Path:
    torch.manual_seed(seed)
    sae = build_sae(SAEConfig(arch="topk", width=width, k=2), d_in)
    with torch.no_grad():
        sae.b_enc.fill_(0.1)
    return save_sae(sae, path)


@pytest.fixture
def atlas(tmp_path: Path) -> tuple[Path, list[dict]]:
    rng = np.random.default_rng(0)
    n = 20
    # vision: one row per image; thumbnails saved at extraction, 8 px
    images = tmp_path / "acts/vis/imgs"
    write_store(
        images / "L0_cls", rng.normal(size=(n, 6)), np.arange(n),
        pd.DataFrame({"index": np.arange(n), "label": ["a"] * n}),
    )  # fmt: skip
    np.save(images / "thumbnails.npy", rng.integers(0, 255, (n, 8, 8, 3), dtype=np.uint8))
    # text: three tokens per prompt
    prompts = tmp_path / "acts/txt/prompts"
    write_store(
        prompts / "L0_all", rng.normal(size=(3 * n, 6)), np.repeat(np.arange(n), 3),
        pd.DataFrame({"index": np.arange(n), "prompt": ["a red star"] * n}),
        token_id=np.tile([0, 1, 2], n), vocab={0: "a", 1: "red", 2: "star"},
    )  # fmt: skip
    semantics = tmp_path / "semantics.csv"
    pd.DataFrame(
        {"sae": "vis/L0_cls/s1", "latent": np.arange(16),
         "name": ["circle", "red square"] * 8, "name_score": 0.5, "purity": 1.0,
         "top_label": ["circle", "square"] * 8}
    ).to_csv(semantics, index=False)  # fmt: skip
    saes = []
    for name, seed in (("s1", 0), ("s2", 1)):
        saes.append(
            AtlasSae("vis", "L0_cls", name, "vision", str(tiny_sae(tmp_path / name, 6, 16, seed)),
                     str(images / "L0_cls"), "imgs", {"source": "imagefolder"})
        )  # fmt: skip
    saes.append(
        AtlasSae("txt", "L0_all", "t1", "text_encoder", str(tiny_sae(tmp_path / "t1", 6, 8, 2)),
                 str(prompts / "L0_all"), "prompts", {"source": "prompts"})
    )  # fmt: skip
    out = tmp_path / "atlas"
    records = build_atlas(
        saes, {"semantics": [semantics]}, out, AtlasSettings(top_examples=4), "a test"
    )
    return out, records


def page_data(folder: Path) -> dict:
    text = (folder / "data.js").read_text()
    return json.loads(text.removeprefix("window.ATLAS = ").rstrip().removesuffix(";"))


def test_atlas_writes_a_page_per_sae_with_its_alive_latents(atlas) -> None:
    out, records = atlas
    assert [r["id"] for r in records] == ["vis/L0_cls/s1", "vis/L0_cls/s2", "txt/L0_all/t1"]
    index = (out / "index.html").read_text()
    for r in records:
        assert f'href="{r["folder"]}/index.html"' in index
        data = page_data(out / r["folder"])
        assert data["sae"]["alive"] == len(data["latents"]) == r["alive"] > 0
        for latent in data["latents"]:
            assert latent["freq"] > 0 and 1 <= len(latent["top"]) <= 4
            assert len(latent["nn"]) == 5 and latent["i"] not in [j for j, _ in latent["nn"]]
            assert sum(latent["h"][1:]) == round(latent["freq"] * data["sae"]["rows"])
    s1 = page_data(out / "saes/vis/L0_cls/s1")
    named = {latent["i"]: latent["r"]["name"] for latent in s1["latents"]}
    assert named == {i: ("circle", "red square")[i % 2] for i in named}
    assert "naming score" in [r[1] for r in s1["roles"]]
    assert "steering effect" in s1["absent"]
    assert page_data(out / "saes/vis/L0_cls/s2")["roles"] == []  # nothing written about s2
    text = page_data(out / "saes/txt/L0_all/t1")
    assert text["media"] is None and text["texts"]
    for latent in text["latents"]:  # every top prompt carries one code per token
        assert all(len(codes) == 3 for codes in latent["tok"])


def test_atlas_stores_each_dataset_thumbnails_once(atlas) -> None:
    out, _ = atlas
    media = out / "media"
    assert sorted(p.name for p in media.iterdir()) == ["imgs.js", "imgs_0.png"]
    record = json.loads((media / "imgs.js").read_text().split("] = ", 1)[1].rstrip(";\n"))
    shown = {e for f in ("s1", "s2") for lat in page_data(out / "saes/vis/L0_cls" / f)["latents"]
             for e, _ in lat["top"]}  # fmt: skip
    assert set(map(int, record["slots"])) == shown and record["size"] == 8
    page = (out / "saes/vis/L0_cls/s1/index.html").read_text()
    assert '<script src="../../../../media/imgs.js">' in page and "__SCRIPTS__" not in page


def test_atlas_page_lists_searches_and_shows_a_latent_in_a_browser(atlas) -> None:
    from atlas_browser import listed, open_page, search, show_latent
    from headless import chromium

    out, _ = atlas
    folder = out / "saes/vis/L0_cls/s1"
    data = page_data(folder)
    names = {latent["i"]: latent["r"]["name"] for latent in data["latents"]}
    with chromium() as driver:
        open_page(driver, folder / "index.html")
        assert sorted(listed(driver)) == sorted(names)
        found = search(driver, "SQUARE")
        assert found and sorted(found) == sorted(i for i, n in names.items() if "square" in n)
        assert search(driver, "no such concept") == []
        search(driver, "")
        latent = data["latents"][0]
        shown = show_latent(driver, latent["i"])
        assert shown["examples"] == len(latent["top"]) == len(shown["images"])
        assert all(width > 0 for width in shown["images"])  # the shared sheet loaded
        assert shown["neighbours"] == 5 and shown["bars"] == len(latent["h"]) - 1


def test_thumbnail_sheets_are_png_or_jpeg(tmp_path: Path) -> None:
    from PIL import Image

    from saeprobe.atlas.media import write_media

    thumbs = {i: np.full((8, 8, 3), 6 * i, np.uint8) for i in range(40)}
    png = write_media(tmp_path / "a", "d", thumbs, 8)
    jpeg = write_media(tmp_path / "b", "d", thumbs, 8, "jpeg")
    assert png["sheets"] == ["d_0.png"] and jpeg["sheets"] == ["d_0.jpg"]
    assert png["slots"]["33"] == jpeg["slots"]["33"] == [0, 1, 1]  # 32 thumbnails a row
    sheet = np.asarray(Image.open(tmp_path / "a/media/d_0.png"))
    assert sheet.shape == (16, 256, 3) and (sheet[8:16, 8:16] == 6 * 33).all()
    with pytest.raises(ValueError, match="thumbnail_format"):
        write_media(tmp_path / "c", "d", thumbs, 8, "gif")
