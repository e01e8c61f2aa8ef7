"""Shared fixtures. tests/unit: the library on tiny inputs (seconds); tests/workflow: real
snakemake runs on the smallest config (marked `workflow`)."""

from __future__ import annotations

from pathlib import Path

import pytest
from snakemake_run import ROOT, run_snakemake


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A working directory in which configs/smoke.yaml has run to completion (once per session;
    tests only read it or dry-run against it)."""
    workdir = tmp_path_factory.mktemp("smoke")
    result = run_snakemake(
        "--cores", "2", "--configfile", str(ROOT / "configs" / "smoke.yaml"),
        "--directory", str(workdir), timeout=1800,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    return workdir


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "workflow" in Path(item.fspath).parts:
            item.add_marker(pytest.mark.workflow)
