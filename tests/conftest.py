"""Shared fixtures. tests/unit: the library on tiny inputs (seconds); tests/workflow: real
snakemake runs on the smallest config (marked `workflow`)."""

from __future__ import annotations

from pathlib import Path

import pytest
from snakemake_run import ROOT, run_snakemake

_RANK = pytest.StashKey[int]()


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


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own hook reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Marks tests/workflow `workflow`, and groups tests for pytest-xdist's `--dist loadgroup`
    (`make test`): a file's tests run on one worker, so its module fixtures run once, and so do
    all tests of the smoke run, so it runs once per session. The groups are handed out in this
    order (`--no-loadscope-reorder`), two to a worker at first: the smoke run's tests and the
    rehearsal, the two longest, go first, to different workers, then the other workflow files,
    then the unit files."""
    for item in items:
        workflow = "workflow" in Path(item.fspath).parts
        if workflow:
            item.add_marker(pytest.mark.workflow)
        smoke = "smoke_run" in item.fixturenames
        group = "smoke_run" if smoke else item.nodeid.split("::")[0]
        item.add_marker(pytest.mark.xdist_group(group))
        rehearsal = item.get_closest_marker("rehearsal") is not None
        item.stash[_RANK] = 0 if smoke else 1 if rehearsal else 2 if workflow else 3
    items.sort(key=lambda item: item.stash[_RANK])
