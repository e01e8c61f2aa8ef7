"""Artifacts shared through DVC, per config: run the smoke config under its own name and results
root, push, clone afresh, `make pull CONFIG=configs/smoke.yaml [GROUP=...]`, and check what is
left to compute."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from snakemake_run import ROOT, SMOKE_RESULTS, planned_jobs, smoke_config, smoke_results

pytestmark = pytest.mark.workflow
BIN = Path(sys.executable).parent
VENV = BIN.parent
SMOKE = "configs/smoke.yaml"
# use this environment instead of building a new .venv (-o: don't remake it)
MAKE_ENV = (f"VENV={VENV}", "-o", f"{BIN}/snakemake")
GROUPS = ("world", "models", "activations", "saes", "tables", "figures", "RESULTS.md")
# what is made before the activations (and the extraction itself): never recomputed after a pull
# of the activations
BEFORE_SAES = {
    "make_world",
    "train_world_clip",
    "train_world_diffusion",
    "train_world_llava",
    "extract_activations",
}


def sh(*args: str, cwd: Path, timeout: float = 900) -> str:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", GIT_TERMINAL_PROMPT="0")
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{' '.join(args)}\n{output[-5000:]}"
    return output


def commit(cwd: Path, message: str) -> None:
    sh("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message, cwd=cwd)


def project_copy(dest: Path) -> None:
    """The working tree as git sees it (tracked and untracked, not ignored) in a new repo."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    sh("git", "init", "-q", "-b", "main", cwd=dest)
    sh("git", "add", "-A", cwd=dest)
    commit(dest, "project")


@pytest.fixture(scope="module")
def origin(tmp_path_factory: pytest.TempPathFactory, smoke_run: Path) -> Path:
    """A repo whose smoke-config artifacts are recorded in dvc.lock and pushed to a local remote."""
    base = tmp_path_factory.mktemp("dvc")
    origin = base / "origin"
    origin.mkdir()
    project_copy(origin)
    # start from the session's finished smoke run (times and snakemake metadata kept), so this
    # run has nothing left to do; the DVC round trip is what is tested here
    shutil.copytree(smoke_results(smoke_run), smoke_results(origin), symlinks=True)
    shutil.copytree(smoke_run / ".snakemake/metadata", origin / ".snakemake/metadata")
    run = sh("snakemake", "--cores", "2", "--configfile", SMOKE, cwd=origin)
    assert "Nothing to be done" in run, run[-3000:]
    sh("dvc", "remote", "add", "-d", "shared", str(base / "remote"), cwd=origin)
    sh("make", "push", f"CONFIG={SMOKE}", *MAKE_ENV, cwd=origin)
    sh("git", "add", "dvc.lock", ".dvc/config", cwd=origin)
    commit(origin, "artifacts")
    lock = (origin / "dvc.lock").read_text()
    for group in GROUPS:
        assert f"path: {SMOKE_RESULTS}/{group}" in lock
    assert "path: results/world" not in lock  # the default config's stages are not recorded
    return origin


def clone_of(origin: Path, name: str) -> Path:
    clone = origin.parent / name
    sh("git", "clone", "-q", str(origin), str(clone), cwd=origin.parent)
    assert not (clone / "results").exists()
    return clone


def test_a_pulled_config_is_not_recomputed(origin: Path) -> None:
    clone = clone_of(origin, "clone")
    sh("make", "pull", f"CONFIG={SMOKE}", *MAKE_ENV, cwd=clone)
    table = "tables/sae_quality.csv"
    restored = smoke_results(clone) / table
    assert restored.read_bytes() == (smoke_results(origin) / table).read_bytes()
    assert sorted(p.name for p in (clone / "results").iterdir()) == ["smoke"]
    dry = sh("snakemake", "--cores", "1", "--configfile", SMOKE, "-n", cwd=clone)
    assert "Nothing to be done" in dry, dry[-3000:]


def test_pulled_activations_recompute_only_what_follows_them(origin: Path) -> None:
    clone = clone_of(origin, "clone_activations")
    sh("make", "pull", f"CONFIG={SMOKE}", "GROUP=activations", *MAKE_ENV, cwd=clone)
    results = smoke_results(clone)
    # the activations come with what they were made from (the world and its models), which the
    # SAE evaluation and the tasks read too; nothing after them is restored
    assert (results / "activations").is_dir() and (results / "models").is_dir()
    assert not (results / "saes").exists() and not (results / "tables").exists()
    config = smoke_config()
    jobs = planned_jobs(clone, config, clone / "Snakefile")
    assert not jobs.keys() & BEFORE_SAES, jobs
    n_sites = sum(len(sites) for sites in config["sae"]["sites"].values())
    controls = set(config["vision"]["semantics"].get("untrained_controls", {}).values())
    controls |= set(config.get("mllm", {}).get("negatives", {}).values())
    judged = sum(len(s) for m, s in config["sae"]["sites"].items() if m not in controls)
    # every site trains; only the study's sites (not the controls') are evaluated and judged
    assert jobs["train_saes"] == n_sites and jobs["eval_saes"] == judged < n_sites
    tasks = {"semantics_table", "ontology_table", "steering", "attributes", "crossmodal_report"}
    assert tasks | {"sae_quality_table", "report_results"} <= jobs.keys()
