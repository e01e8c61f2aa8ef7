"""The latent atlas the smoke run writes, opened in a real headless browser (Chromium)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from headless import chromium
from snakemake_run import smoke_results

pytestmark = pytest.mark.workflow


def sae_ids(results: Path) -> set[str]:
    """Every SAE the run trained: {model}/{site}/{name} from the sweep records."""
    out = set()
    for sweep in results.glob("saes/*/*/sweep.json"):
        model, site = sweep.parent.parent.name, sweep.parent.name
        out |= {f"{model}/{site}/{name}" for name in json.loads(sweep.read_text())["saes"]}
    return out


def test_the_atlas_has_a_page_for_every_sae_and_is_linked(smoke_run: Path) -> None:
    check_atlas_files(smoke_results(smoke_run), "world_clip/pooled/topk")


def test_the_atlas_works_in_a_browser(smoke_run: Path) -> None:
    check_atlas_in_browser(
        smoke_results(smoke_run), "world_clip/pooled/topk", "world_diffusion/L0_all/topk"
    )


def check_atlas_files(results: Path, vision_sae: str) -> None:
    """Every SAE of a run has its page, linked from the atlas's index; RESULTS.md links the
    atlas; thumbnails are stored per dataset; a vision SAE's page shows the tasks' roles."""
    from atlas_browser import page_data

    index = (results / "atlas/index.html").read_text()
    ids = sae_ids(results)
    assert ids and any(i.startswith("world_diffusion/") for i in ids)
    for sae in ids:
        assert f'href="saes/{sae}/index.html"' in index
        data = page_data(results / "atlas/saes" / sae)
        assert data["sae"]["id"] == sae and data["sae"]["alive"] == len(data["latents"]) > 0
    assert "](atlas/index.html)" in (results / "RESULTS.md").read_text()
    # thumbnails once per dataset, not per SAE
    media = {p.stem.rsplit("_", 1)[0] for p in (results / "atlas/media").glob("*.png")}
    assert media == {p.stem for p in (results / "atlas/media").glob("*.js")}
    vision = page_data(results / "atlas/saes" / vision_sae)
    assert vision["media"] in media and {"name", "lch", "probe_weight"} <= {
        r[0] for r in vision["roles"]
    }


def check_atlas_in_browser(results: Path, vision_sae: str, text_sae: str) -> None:
    """The index lists the SAE's alive latents, a search by name filters it, a latent's panel
    shows its images (vision), its prompts with firing tokens (text encoder) and the steering
    strip (diffusion). ATLAS_SCREENSHOTS=<folder> also saves screenshots of the index and of
    one latent there."""
    from atlas_browser import listed, open_page, page_data, search, show_latent

    folder = results / "atlas/saes" / vision_sae
    data = page_data(folder)
    names = {latent["i"]: latent["r"].get("name", "") for latent in data["latents"]}
    word = max(set(names.values()) - {""}, key=lambda n: list(names.values()).count(n))
    latent = next(la for la in data["latents"] if la["r"].get("name") == word)
    shots = os.environ.get("ATLAS_SCREENSHOTS")
    with chromium() as driver:
        open_page(driver, folder / "index.html")
        assert sorted(listed(driver)) == sorted(names)
        found = search(driver, word.upper())
        assert sorted(found) == sorted(i for i, n in names.items() if word in n.lower())
        assert latent["i"] in found and search(driver, "#" + str(latent["i"])) == [latent["i"]]
        search(driver, "")
        if shots:
            driver.save_screenshot(str(Path(shots) / "atlas_index.png"))
        shown = show_latent(driver, latent["i"])
        assert shown["title"].startswith(f"#{latent['i']} {word}")
        assert len(shown["images"]) == len(latent["top"]) > 0
        assert all(width > 0 for width in shown["images"])
        assert shown["bars"] > 0 and shown["neighbours"] > 0
        if shots:
            driver.save_screenshot(str(Path(shots) / "atlas_latent.png"))

        text = results / "atlas/saes" / text_sae
        text_data = page_data(text)
        steered = [la for la in text_data["latents"] if la["strip"] is not None]
        assert steered, "the steering strips reached no alive latent"
        open_page(driver, text / "index.html")
        shown = show_latent(driver, steered[0]["i"])
        assert shown["firing"] > 0 and shown["images"] == []
        strip = driver.execute_script(
            "const i = document.querySelector('.strip img'); return i && i.naturalWidth"
        )
        assert strip and strip > 0
