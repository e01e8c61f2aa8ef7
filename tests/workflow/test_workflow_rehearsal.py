"""The paper config rehearsed end to end: every job of its DAG, offline, on the miniature hub."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import yaml
from snakemake_run import ROOT, planned_jobs

from saeprobe.rehearsal.build import load_configs

pytestmark = [pytest.mark.workflow, pytest.mark.rehearsal]

PAPER = yaml.safe_load((ROOT / "configs" / "paper.yaml").read_text())
CONFIG = load_configs([ROOT / "configs" / "paper.yaml", ROOT / "configs" / "rehearsal.yaml"])
RESULTS = CONFIG["results"]
TABLES = [
    "sae_quality",
    "semantics",
    "ood_detection",
    "ood_generalization",
    "ontology",
    "steering",
    "attributes",
    "crossmodal",
    "claims",
]


def rehearse(workdir: Path, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "saeprobe.rehearsal", "--workdir", str(workdir), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    workdir = tmp_path_factory.mktemp("rehearsal")
    result = rehearse(workdir, "--cores", "2", timeout=3600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    return workdir, output


def test_every_job_of_the_paper_dag_runs(rehearsal, tmp_path: Path) -> None:
    _, output = rehearsal
    ran = Counter(re.findall(r"Finished jobid: \d+ \(Rule: (\w+)\)", output))
    assert "Error in rule" not in output
    assert ran == Counter(planned_jobs(tmp_path, PAPER))


def test_every_table_names_the_paper_datasets(rehearsal) -> None:
    workdir, _ = rehearsal
    tables = {name: pd.read_csv(workdir / RESULTS / f"tables/{name}.csv") for name in TABLES}
    assert all(len(t) for t in tables.values()), [n for n, t in tables.items() if not len(t)]
    assert (workdir / RESULTS / "RESULTS.md").stat().st_size > 0
    vision = PAPER["vision"]
    controls = vision["semantics"]["untrained_controls"]
    assert set(tables["sae_quality"]["model"]) == set(PAPER["models"]) - set(controls.values())
    ood = tables["ood_detection"]
    groups = {f"{g} (mean)" for g in vision["ood_detection"].get("ood_groups", {}).values()}
    assert groups <= set(ood["ood_dataset"])  # one mean row per group, groups never averaged
    sets = set(ood["ood_dataset"]) - groups
    assert sets == set(vision["ood_detection"]["ood_datasets"])
    assert set(ood["id_dataset"]) == {vision["id_dataset"]}
    shifted = tables["ood_generalization"]
    assert set(shifted["test_dataset"]) >= set(vision["ood_generalization"]["test_datasets"])
    assert set(shifted["train_dataset"]) == {vision["train_dataset"]}
    for name in ("ood_detection", "ood_generalization", "ontology"):
        assert set(tables[name]["model"]) == set(vision["models"]), name
    assert set(tables["steering"]["concept"]) == set(PAPER["diffusion"]["steering"]["concepts"])


def test_the_semantics_claim_has_its_untrained_negative_at_every_site(rehearsal) -> None:
    """Each vision model's semantics evidence has the `negative:untrained` case (its untrained
    copy's primary SAE) at each of its SAE sites, and the claim table judges it."""
    workdir, _ = rehearsal
    controls = PAPER["vision"]["semantics"]["untrained_controls"]
    assert set(controls) == set(PAPER["vision"]["models"])
    for model, control in controls.items():
        evidence = pd.read_csv(workdir / RESULTS / f"evidence/semantics/{model}.csv")
        untrained = evidence[evidence["case"] == "negative:untrained"]
        sites = {f"{model}/{site}" for site in PAPER["sae"]["sites"][model]}
        assert set(untrained["site"]) == sites, model
        measured = evidence[evidence["case"] == "measured"]
        assert set(untrained["statistic"]) <= set(measured["statistic"]), model
        assert (workdir / RESULTS / f"saes/{control}").is_dir()
    claims = pd.read_csv(workdir / RESULTS / "tables/claims.csv")
    assert set(claims[claims["claim"] == "semantics"]["site"]) >= {
        f"{m}/{s}" for m in controls for s in PAPER["sae"]["sites"][m]
    }
