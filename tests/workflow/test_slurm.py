"""The smoke config through snakemake's SLURM executor on a real single-node cluster."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from snakemake_run import ROOT, SMOKE_RESULTS, run_snakemake, smoke_results

CLUSTER = ROOT / "tests" / "workflow" / "slurm" / "cluster.sh"
# the vision SAEs' quality per site (the table itself also waits for the other families' SAEs)
QUALITY = [f"{SMOKE_RESULTS}/saes/world_clip/{site}/quality.csv" for site in ("L1_cls", "pooled")]
pytestmark = pytest.mark.workflow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A running slurmctld + slurmd on loopback (slurm-wlm and munge installed if missing)."""
    state = tmp_path_factory.mktemp("slurm")
    started = subprocess.run(
        ["bash", str(CLUSTER), "start", str(state)], capture_output=True, text=True, timeout=600
    )
    assert started.returncode == 0, started.stdout + started.stderr
    yield state
    subprocess.run(["bash", str(CLUSTER), "stop", str(state)], check=False, timeout=60)


def test_smoke_config_runs_every_job_through_slurm(cluster: Path, tmp_path: Path) -> None:
    # The SAE chain and one vision task (world, CLIP, extraction, SAEs, evaluation, ontology):
    # every kind of resource request, without the minutes that two more world models would add.
    result = run_snakemake(
        *QUALITY,
        f"{SMOKE_RESULTS}/tables/ontology.csv",
        "--workflow-profile",
        str(ROOT / "profiles" / "slurm"),
        "--configfile",
        str(ROOT / "configs" / "smoke.yaml"),
        "--directory",
        str(tmp_path),
        "--slurm-status-command",
        "squeue",
        "--slurm-no-account",
        "--slurm-init-seconds-before-status-checks",
        "1",
        timeout=1200,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    submitted = re.findall(r"Job (\d+) has been submitted with SLURM jobid (\d+)", output)
    finished = re.findall(r"Finished jobid: (\d+) \(Rule: (\w+)\)", output)
    local = {job for job, rule in finished if rule == "all"}
    assert submitted, output[-3000:]
    # every job but the target rule `all` went through sbatch, each exactly once, and finished
    assert {job for job, _ in submitted} == {job for job, _ in finished} - local
    assert len({slurm_id for _, slurm_id in submitted}) == len(submitted)
    assert "Error in rule" not in output
    assert all((tmp_path / path).exists() for path in QUALITY)
    assert (smoke_results(tmp_path) / "tables/ontology.csv").exists()
    # SLURM itself ran them: the controller's log lists each job as completed
    controller = (cluster / "slurmctld.log").read_text()
    for _, slurm_id in submitted:
        assert re.search(rf"JobId={slurm_id} WEXITSTATUS 0\b", controller), slurm_id


def test_rehearsal_extraction_and_saes_run_through_slurm(cluster: Path, tmp_path: Path) -> None:
    """The paper config on the miniature hub (configs/rehearsal.yaml): ViT-L/14's extractions,
    SAE sweeps and evaluations as SLURM jobs, its datasets prepared locally."""
    import sys

    from saeprobe.rehearsal.build import load_configs

    config = load_configs([ROOT / "configs" / "paper.yaml", ROOT / "configs" / "rehearsal.yaml"])
    sites = config["sae"]["sites"]["clip_vitl14"]
    targets = [f"{config['results']}/saes/clip_vitl14/{site}/quality.csv" for site in sites]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "saeprobe.rehearsal",
            "--workdir",
            str(tmp_path),
            *targets,
            "--workflow-profile",
            str(ROOT / "profiles" / "slurm"),
            "--slurm-status-command",
            "squeue",
            "--slurm-no-account",
            "--slurm-init-seconds-before-status-checks",
            "1",
            # the paper's memory requests (tens of GB) exceed the test node; a site overlay's
            # setting, as a cluster's own profile would give it
            "--set-resources",
            *(f"{rule}:mem_mb=2000" for rule in ("extract_activations", "train_saes", "eval_saes")),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    submitted = dict(re.findall(r"Job (\d+) has been submitted with SLURM jobid (\d+)", output))
    rules = dict(re.findall(r"Finished jobid: (\d+) \(Rule: (\w+)\)", output))
    through_slurm = [rules[job] for job in submitted]
    assert sorted(through_slurm) == sorted(
        ["extract_activations"] * 2 + ["train_saes"] * len(sites) + ["eval_saes"] * len(sites)
    )
    assert all((tmp_path / path).exists() for path in targets)
    controller = (cluster / "slurmctld.log").read_text()
    for slurm_id in submitted.values():
        assert re.search(rf"JobId={slurm_id} WEXITSTATUS 0\b", controller), slurm_id
