"""The paper config builds the whole study's DAG offline, with GPU requests on GPU rules."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from snakemake_run import ROOT, run_snakemake

pytestmark = pytest.mark.workflow

TASKS = (
    "extract",
    "train_saes",
    "semantics",
    "ood_detection",
    "ood_generalization",
    "ontology",
    "steering",
    "attributes",
    "crossmodal",
    "figures",
    "report",
)
GPU_RULES = ("extract_activations", "train_saes", "eval_saes", "vision_semantics")


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> str:
    workdir: Path = tmp_path_factory.mktemp("paper")
    result = run_snakemake(
        "-n",
        "--configfile",
        str(ROOT / "configs" / "paper.yaml"),
        "--directory",
        str(workdir),
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-4000:] + result.stdout[-4000:]
    return result.stdout


def _jobs(output: str) -> dict[str, list[str]]:
    """rule name -> the resources line of each of its jobs."""
    jobs: dict[str, list[str]] = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", output)[1:]:
        name = re.match(r"(?:local)?rule (\w+):", block).group(1)
        resources = re.search(r"resources: (.*)", block)
        jobs.setdefault(name, []).append(resources.group(1) if resources else "")
    return jobs


def test_every_task_of_the_study_is_in_the_dag(dry_run: str) -> None:
    jobs = _jobs(dry_run)
    for task in TASKS:
        assert any(task in name for name in jobs), f"no rule named for {task}: {sorted(jobs)}"


def test_gpu_rules_ask_for_a_gpu_and_realistic_resources(dry_run: str) -> None:
    jobs = _jobs(dry_run)
    for rule in GPU_RULES:
        for resources in jobs[rule]:
            assert "gpu=1" in resources, (rule, resources)
            mem = int(re.search(r"mem_mb=(\d+)", resources).group(1))
            runtime = int(re.search(r"runtime=(\d+)", resources).group(1))
            assert mem >= 16000 and runtime >= 60, (rule, resources)


def test_downloads_are_local_jobs(dry_run: str) -> None:
    jobs = _jobs(dry_run)
    assert {"prepare_dataset", "wordnet_hierarchy"} <= set(jobs)
    assert "localrule: True" in (ROOT / "rules" / "data.smk").read_text()
