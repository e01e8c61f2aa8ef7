"""Reading a latent-atlas page (saeprobe.atlas) the way a user does, in a headless browser."""

from __future__ import annotations

import json
from pathlib import Path

from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait


def page_data(folder: Path) -> dict:
    """The data an SAE's page shows (its data.js)."""
    text = (folder / "data.js").read_text()
    return json.loads(text.removeprefix("window.ATLAS = ").rstrip().removesuffix(";"))


def open_page(driver, page: Path) -> None:
    driver.get(page.resolve().as_uri())
    WebDriverWait(driver, 20).until(
        lambda d: d.execute_script("return document.readyState") == "complete"
    )


def listed(driver) -> list[int]:
    """The latents the index lists, in its order."""
    rows = driver.find_elements(By.CSS_SELECTOR, "#latents tbody tr")
    return [int(r.get_attribute("data-latent")) for r in rows]


def search(driver, text: str) -> list[int]:
    """Type `text` into the search box (replacing what is there); returns the listed latents."""
    box = driver.find_element(By.ID, "search")
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(Keys.BACKSPACE)
    if text:
        box.send_keys(text)
    return listed(driver)


def show_latent(driver, latent: int) -> dict:
    """Open a latent's panel by clicking its row; returns what the panel shows: title, images
    (the natural width of each loaded thumbnail), firing tokens, neighbours, histogram bars."""
    driver.find_element(By.CSS_SELECTOR, f'#latents tbody tr[data-latent="{latent}"]').click()
    WebDriverWait(driver, 10).until(
        lambda d: d.find_element(By.ID, "latent-title").text.startswith(f"#{latent} ")
    )
    WebDriverWait(driver, 10).until(
        lambda d: d.execute_script(
            "return [...document.querySelectorAll('#examples img')].every(i => i.complete)"
        )
    )
    return driver.execute_script(
        """return {
          title: document.getElementById('latent-title').textContent,
          images: [...document.querySelectorAll('#examples img.thumb')].map(i => i.naturalWidth),
          firing: document.querySelectorAll('#examples .tok.firing').length,
          examples: document.querySelectorAll('#examples .example').length,
          neighbours: document.querySelectorAll('.neighbours a, .neighbours span').length,
          bars: document.querySelectorAll('svg.hist rect').length,
        }"""
    )
