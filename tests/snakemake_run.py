"""Runs the real snakemake command line on the project's Snakefile."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


def run_snakemake(
    *args: str, cwd: Path = ROOT, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run the installed snakemake on the project's Snakefile and capture its output."""
    env = dict(os.environ, PYTHONHASHSEED="0")
    return subprocess.run(
        [SNAKEMAKE, "--snakefile", str(ROOT / "Snakefile"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


SMOKE = ROOT / "configs" / "smoke.yaml"


def smoke_config() -> dict:
    return yaml.safe_load(SMOKE.read_text())


# The smoke config's results root (its `results:` key), relative to the run's working directory;
# configs derived from smoke_config() keep it.
SMOKE_RESULTS = smoke_config()["results"]


def smoke_results(workdir: Path) -> Path:
    """Where a run of the smoke config (or one derived from it) in `workdir` writes everything."""
    return workdir / SMOKE_RESULTS


def planned_jobs(workdir: Path, config: dict, snakefile: Path | None = None) -> dict[str, int]:
    """{rule: job count} that a dry-run of `config` in `workdir` would run."""
    path = workdir / "planned.yaml"
    path.write_text(yaml.safe_dump(config))
    extra = ["--snakefile", str(snakefile)] if snakefile else []
    result = run_snakemake(
        "--cores", "1", "--configfile", str(path), "--directory", str(workdir), "-n", *extra
    )
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    if "Nothing to be done" in output:
        return {}
    stats = output.split("Job stats:", 1)[1].split("total", 1)[0]
    return {m[0]: int(m[1]) for m in re.findall(r"^(\w+)\s+(\d+)$", stats, flags=re.M)}
