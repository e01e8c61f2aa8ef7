"""Artifacts shared through DVC: run, push, fresh clone, `make pull`, nothing to recompute."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from snakemake_run import ROOT

pytestmark = pytest.mark.workflow
BIN = Path(sys.executable).parent
VENV = BIN.parent


def sh(*args: str, cwd: Path, timeout: float = 900) -> str:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", GIT_TERMINAL_PROMPT="0")
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{' '.join(args)}\n{output[-5000:]}"
    return output


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
    # the default config of this throwaway repo is the smallest one
    shutil.copy(ROOT / "configs" / "smoke.yaml", dest / "config.yaml")
    sh("git", "init", "-q", "-b", "main", cwd=dest)
    sh("git", "add", "-A", cwd=dest)
    sh("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "project", cwd=dest)


def test_pulled_artifacts_are_not_recomputed(tmp_path: Path, smoke_run: Path) -> None:
    origin, remote, clone = tmp_path / "origin", tmp_path / "remote", tmp_path / "clone"
    origin.mkdir()
    project_copy(origin)
    # start from the session's finished smoke run (times and snakemake metadata kept), so this
    # run has nothing left to do; the DVC round trip is what is tested here
    for part in ("results", ".snakemake/metadata"):
        shutil.copytree(smoke_run / part, origin / part, symlinks=True)
    run = sh("snakemake", "--cores", "2", cwd=origin)
    assert "Nothing to be done" in run, run[-3000:]
    sh("dvc", "remote", "add", "-d", "shared", str(remote), cwd=origin)
    sh("dvc", "commit", "-f", cwd=origin)
    sh("dvc", "push", cwd=origin)
    sh("git", "add", "dvc.lock", ".dvc/config", cwd=origin)
    sh("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "artifacts", cwd=origin)
    lock = (origin / "dvc.lock").read_text()
    for group in ("results/world", "results/models", "results/activations", "results/saes"):
        assert f"path: {group}" in lock

    sh("git", "clone", "-q", str(origin), str(clone), cwd=tmp_path)
    assert not (clone / "results").exists()
    # use this environment instead of building a new .venv in the clone (-o: don't remake it)
    sh("make", "pull", f"VENV={VENV}", "-o", f"{BIN}/snakemake", cwd=clone)

    restored = clone / "results/tables/sae_quality.csv"
    assert restored.read_bytes() == (origin / "results/tables/sae_quality.csv").read_bytes()
    dry = sh("snakemake", "--cores", "1", "-n", cwd=clone)
    assert "Nothing to be done" in dry, dry[-3000:]
