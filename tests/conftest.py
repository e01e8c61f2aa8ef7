"""Shared fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest
from snakemake_run import ROOT


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT
