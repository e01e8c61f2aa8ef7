"""Task attributes: automated discovery of what a text-encoder SAE latent does to images.

For the latents with the largest activation mass on the training prompts, generate with and
without the latent added (saeprobe.diffusion.steering.discover_attributes), score the change
against an attribute vocabulary and keep latents whose attribute is consistent across prompts
and seeds; each latent's input-side concept (prompt-word contrast) is recorded beside it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from saeprobe.claims import MEASURED, NEGATIVE, POSITIVE, SENSITIVITY, evidence_rows
from saeprobe.diffusion.experiment import Experiment, run_attribute_experiment, world_vocabulary
from saeprobe.io import atomic_write_csv
from saeprobe.plots import save_figure
from saeprobe.plots.diffusion import attribute_grid
from saeprobe.stats import Estimate, null_estimate

N_PERMUTATIONS = 1000


def named_after_input(
    attribute: np.ndarray, input_concept: np.ndarray, seed: int, n_perm: int = N_PERMUTATIONS
) -> Estimate:
    """How many kept units (latents or directions) are named after their input concept, with the
    permutation null that shuffles input concepts among them: value = #{attribute ==
    input_concept}, interval = the null's central 95%, p = one-sided permutation p-value.
    attribute, input_concept: (n_kept,) strings."""
    attribute, input_concept = np.asarray(attribute), np.asarray(input_concept)
    observed = float((attribute == input_concept).sum())
    rng = np.random.default_rng([int(seed), 4133])
    null = np.array(
        [(attribute == rng.permutation(input_concept)).sum() for _ in range(n_perm)], float
    )
    return null_estimate(observed, null) if len(attribute) else Estimate(0.0, 0.0, 0.0, 1.0)


def attribute_estimates(table: pd.DataFrame, seed: int) -> dict[str, Estimate]:
    """named_after_input (judged) over the kept rows of one case's table (columns kept,
    attribute, input_concept); kept_fraction beside it (for random directions: the false
    discovery rate of the pipeline)."""
    kept = table[table["kept"].astype(bool)]
    return {
        "named_after_input": named_after_input(
            kept["attribute"].to_numpy(str), kept["input_concept"].to_numpy(str), seed
        ),
        "kept_fraction": Estimate(float(table["kept"].astype(bool).mean())),
        "n_examined": Estimate(float(len(table))),
    }


def attribute_evidence(
    table: pd.DataFrame, controls: pd.DataFrame, primary: str | None, seed: int
) -> list[dict]:
    """Evidence rows of the attributes claim. table: attributes.csv (every SAE's latents);
    controls: `attribute_controls` rows (column case: positive / negative) of the primary SAE's
    site. Site: `{model}/{site}` of the SAE id."""
    rows: list[dict] = []
    saes = list(dict.fromkeys(table["sae"])) if len(table) else []
    for sae in saes:
        site, name = str(sae).rsplit("/", 1)
        judged = name == primary if primary is not None else sae == saes[0]
        case = MEASURED if judged else f"{SENSITIVITY}{name}"
        note = "SAE latents; input concept by prompt-word contrast"
        rows += evidence_rows(
            "attributes", site, case, attribute_estimates(table[table["sae"] == sae], seed), note
        )
        if not judged or controls.empty:
            continue
        for ctrl, note in (
            (POSITIVE, "concept text directions, input concept by construction"),
            (NEGATIVE, "norm-matched random directions; kept_fraction = false-discovery rate"),
        ):
            sub = controls[(controls["sae"] == sae) & (controls["case"] == ctrl)]
            if len(sub):
                rows += evidence_rows(
                    "attributes", site, ctrl, attribute_estimates(sub, seed), note
                )
    return rows


def attributes_task(
    exp: Experiment,
    settings: Mapping[str, Any],
    out: Mapping[str, str],
    primary: str | None = None,
    seed: int = 0,
) -> list[dict]:
    """Run attribute discovery (settings: `diffusion.attributes`; vocabulary "world" = the
    world's attributes) and write `out`: table, controls, grid (PNG) and grid_pdf. Returns the
    claim's evidence rows."""
    groups = None
    if settings["vocabulary"] == "world":
        vocabulary, groups = world_vocabulary(exp.vocab)
    else:
        vocabulary = dict(settings["vocabulary"])
    table, images, controls = run_attribute_experiment(
        exp.pipe,
        exp.saes,
        settings,
        exp.generation,
        exp.scorer,
        vocabulary,
        groups,
        list(vocabulary),
        exp.gate,
        primary,
        seed,
    )
    atomic_write_csv(out["table"], table)
    atomic_write_csv(out["controls"], controls)
    first = table[table["sae"] == table["sae"].iloc[0]]
    save_figure(attribute_grid(first, images), out["grid"], out["grid_pdf"])
    return attribute_evidence(table, controls, primary, seed)
