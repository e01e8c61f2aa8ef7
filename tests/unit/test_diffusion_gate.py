"""The generator's concept gate: which colours and shapes count in steering and attributes."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from saeprobe.diffusion.experiment import run_attribute_experiment, run_steering_experiment
from saeprobe.diffusion.gate import (
    RENDER_THRESHOLD,
    concept_gate,
    counts,
    gated,
    read_gate,
    wilson_interval,
)


def _following(acc: dict[str, float], n: int = 20) -> pd.DataFrame:
    """A constructed prompt-following table: colours red/yellow x shapes star/circle, each
    concept right in the fraction `acc[concept]` of its images."""
    rows = []
    for colour in ("red", "yellow"):
        for shape in ("star", "circle"):
            for i in range(n):
                rows.append(
                    {
                        "colour": colour,
                        "shape": shape,
                        "seed": i,
                        "colour_ok": i < acc[colour] * n,
                        "shape_ok": i < acc[shape] * n,
                    }
                )
    return pd.DataFrame(rows)


def test_gate_marks_a_concept_that_is_rarely_drawn_not_renderable(tmp_path) -> None:
    table = _following({"red": 0.95, "yellow": 0.1, "star": 0.2, "circle": 0.9})
    gate = concept_gate(table)
    assert list(gate["concept"]) == ["red", "yellow", "star", "circle"]
    assert list(gate["kind"]) == ["colour", "colour", "shape", "shape"]
    assert (gate["n"] == 40).all()
    assert gate.set_index("concept")["renderable"].to_dict() == {
        "red": True,
        "yellow": False,
        "star": False,
        "circle": True,
    }
    assert (gate["ci_low"] <= gate["accuracy"]).all() and (
        gate["accuracy"] <= gate["ci_high"]
    ).all()
    path = tmp_path / "gate.csv"
    gate.to_csv(path, index=False)
    assert read_gate(path) == {"red": True, "yellow": False, "star": False, "circle": True}


def test_threshold_is_inclusive_and_wilson_matches_the_formula() -> None:
    n = 20
    k = int(RENDER_THRESHOLD * n)
    gate = concept_gate(_following({"red": k / n, "yellow": (k - 1) / n, "star": 1, "circle": 0}))
    assert gate.set_index("concept").loc[["red", "yellow"], "renderable"].tolist() == [True, False]
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-3) and hi == pytest.approx(0.9433, abs=1e-3)
    assert wilson_interval(0, 5)[0] == 0.0 and wilson_interval(5, 5)[1] == 1.0


def test_without_a_gate_or_a_row_a_concept_counts(caplog) -> None:
    gate = {"yellow": False, "red": True}
    assert counts("red", None) and counts("yellow", None)
    assert counts("plain", gate) and not counts("yellow", gate)
    with caplog.at_level(logging.INFO):
        assert gated(["red", "yellow", "star"], gate, "steering") == ["red", "star"]
    assert "yellow" in caplog.text
    assert read_gate(None) is None


class _Stop(Exception):
    pass


def test_steering_and_attributes_skip_ungated_concepts(monkeypatch) -> None:
    """The tasks hand only renderable concepts on: steering picks no latent for an ungated
    concept, attribute discovery never scores against an ungated attribute."""
    import saeprobe.diffusion.experiment as ex

    words = ["red", "yellow", "star"]
    acts = np.zeros((3, 4), dtype=np.float32)
    monkeypatch.setattr(ex, "load_sae", lambda *a: None)
    monkeypatch.setattr(ex, "load_prompt_site", lambda d: (acts, np.arange(3), words, 0))
    monkeypatch.setattr(ex, "latent_stats", lambda sae, a: (np.ones(4), np.ones(4)))
    monkeypatch.setattr(ex, "prompt_codes", lambda *a: np.zeros((3, 4)))
    seen: dict[str, list[str]] = {}

    def contrast(codes, prompts, concept_words):
        seen.setdefault("contrast", list(concept_words))
        return np.zeros((len(concept_words), 4))

    def stop_steering(contrast, chosen):
        seen["steered"] = list(chosen)
        raise _Stop

    def stop_attributes(pipe, sae, name, latents, typical, prompts, seeds, strength, gen,
                        scorer, vocabulary, *rest):  # fmt: skip
        seen["vocabulary"] = list(vocabulary)
        raise _Stop

    monkeypatch.setattr(ex, "word_contrast", contrast)
    monkeypatch.setattr(ex, "pick_latents", stop_steering)
    monkeypatch.setattr(ex, "discover_attributes", stop_attributes)
    monkeypatch.setattr(ex, "gen_settings", lambda *a: None)
    gate = {"red": True, "yellow": False, "star": True}
    saes = [("s", "dir", "site")]
    steering = {"concepts": {w: f"a {w}" for w in words}}

    class Sae:
        def to(self, device):
            return self

    monkeypatch.setattr(ex, "load_sae", lambda *a: Sae())
    with pytest.raises(_Stop):
        run_steering_experiment(None, saes, steering, {}, None, None, "cpu", gate)
    assert seen["steered"] == ["red", "star"]

    class Pipe:
        class text_encoder:
            device = "cpu"

    attributes = {"top_n": 2, "prompts": [], "seeds": [], "strength": 1.0,
                  "min_consistency": 0.5, "min_effect": 0.0}  # fmt: skip
    vocabulary = {w: f"a {w}" for w in [*words, "plain"]}
    with pytest.raises(_Stop):
        run_attribute_experiment(Pipe(), saes, attributes, {}, None, vocabulary, None, words, gate)
    assert seen["vocabulary"] == ["red", "star", "plain"]
    del seen["steered"]
    with pytest.raises(_Stop):  # no gate (a hub model): every concept counts
        run_steering_experiment(None, saes, steering, {}, None, None, "cpu", None)
    assert seen["steered"] == words
