"""saeprobe.jobs.job: a failing job's log holds its traceback, also under real Snakemake."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest

from saeprobe.jobs import LOG_FORMAT, job

SRC = Path(__file__).resolve().parents[2] / "src"


def _fake_snakemake(log: Path, **params: object) -> SimpleNamespace:
    return SimpleNamespace(log=[str(log)], params=SimpleNamespace(**params), threads=1, rule="r")


def _explode(message: str) -> None:
    raise ValueError(message)


def test_exception_leaves_its_traceback_in_the_appended_log(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "job.log"
    log.parent.mkdir()
    log.write_text("earlier attempt\n")
    stderr = sys.stderr
    handlers = list(logging.getLogger().handlers)
    message = f"boom-{uuid.uuid4().hex}"
    with pytest.raises(ValueError, match=message), job(_fake_snakemake(log, seed=3)) as j:
        j.log.info("started")
        _explode(message)
    assert sys.stderr is stderr
    assert logging.getLogger().handlers == handlers
    text = log.read_text()
    assert text.startswith("earlier attempt\n")
    assert "saeprobe.job.r INFO started" in text
    assert "Traceback (most recent call last)" in text
    assert "_explode" in text and f"ValueError: {message}" in text


def test_job_sets_seed_and_keeps_table_jobs_torch_free(tmp_path: Path) -> None:
    log = tmp_path / "new" / "job.log"  # parent created
    with job(_fake_snakemake(log, seed=7), use_torch=False) as j:
        assert (j.seed, j.threads, j.device_name) == (7, 1, "auto")
        print("to the log", file=sys.stderr)
    with job(_fake_snakemake(log, device="cpu")) as j:
        assert j.device.type == "cpu" and j.seed is None
    text = log.read_text()
    assert "to the log" in text and "device cpu" in text
    assert LOG_FORMAT.startswith("%(asctime)s")


SCRIPT = """
from saeprobe.jobs import job

def fail_here(message):
    raise ValueError(message)

with job(snakemake) as j:
    j.log.info("about to fail")
    fail_here(snakemake.params.message)
"""

SNAKEFILE = """
rule fail:
    output:
        "out.txt",
    log:
        "logs/fail.log",
    params:
        message={message!r},
        seed=1,
    script:
        "fail.py"
"""


def test_snakemake_job_failure_keeps_the_traceback_in_its_log(tmp_path: Path) -> None:
    message = f"boom-{uuid.uuid4().hex}"
    (tmp_path / "Snakefile").write_text(SNAKEFILE.format(message=message))
    (tmp_path / "fail.py").write_text(SCRIPT)
    path = os.pathsep.join(p for p in (str(SRC), os.environ.get("PYTHONPATH")) if p)
    result = subprocess.run(
        [str(Path(sys.executable).with_name("snakemake")), "--cores", "1", "--quiet"],
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    log = (tmp_path / "logs" / "fail.log").read_text()
    assert "about to fail" in log
    assert "Traceback" in log and "fail_here" in log and f"ValueError: {message}" in log
