"""The one preamble of every Snakemake script: log file, threads, seed and device.

    from saeprobe.jobs import job

    with job(snakemake) as j:
        table = some_task(snakemake.input[0], seed=j.seed, device=j.device)
        atomic_write_csv(snakemake.output[0], table)

`job` appends to `snakemake.log[0]` and keeps it open until the traceback of any exception
raised in the block has been written there, then re-raises so Snakemake marks the job failed.

Torch rule: importing torch takes seconds, and the table and report jobs never need it. A job
*uses torch* when its rule has a `device` param, or when torch is already imported when the
job starts (the script's library imports pulled it in), or when the caller passes
`use_torch=True`; `use_torch=False` never touches it. Only then are torch's threads set to
`max(1, snakemake.threads)`, torch seeded and (with a `device` param) the device resolved up
front, so a bad device name fails the job with its message in the log. Otherwise
`Job.device` resolves "auto" on first use.
"""

from __future__ import annotations

import logging
import random
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


@dataclass(frozen=True)
class Job:
    """What a script needs besides its inputs and outputs."""

    params: Any  # snakemake.params (attribute access by param name)
    log: logging.Logger
    seed: int | None  # snakemake.params.seed, None when the rule has none
    threads: int  # max(1, snakemake.threads)
    device_name: str  # snakemake.params.device, "auto" when the rule has none

    @cached_property
    def device(self) -> torch.device:
        """`device_name` resolved by `saeprobe.device.pick_device` (imports torch)."""
        from saeprobe.device import pick_device

        return pick_device(self.device_name)


@contextmanager
def job(snakemake: Any, use_torch: bool | None = None) -> Iterator[Job]:
    """Run a script's body with its log, threads, seed and device set up (see module doc).

    snakemake: the object Snakemake injects (used: log[0], params, threads, rule).
    use_torch: None = decide by the torch rule of the module doc; True/False force it.
    On exit the root logger's handler and level and `sys.stderr` are restored, so the helper
    can be used repeatedly in one process.
    """
    if not snakemake.log:
        raise ValueError("saeprobe.jobs.job: the rule has no log: file")
    path = Path(snakemake.log[0])
    path.parent.mkdir(parents=True, exist_ok=True)
    params = snakemake.params
    device_name = getattr(params, "device", None)
    uses_torch = (
        use_torch if use_torch is not None else device_name is not None or "torch" in sys.modules
    )
    seed = getattr(params, "seed", None)
    rule = getattr(snakemake, "rule", None)
    info = Job(
        params=params,
        log=logging.getLogger(f"saeprobe.job.{rule}" if rule else "saeprobe.job"),
        seed=None if seed is None else int(seed),
        threads=max(1, int(getattr(snakemake, "threads", 1) or 1)),
        device_name=str(device_name or "auto"),
    )
    root = logging.getLogger()
    old_level, old_stderr = root.level, sys.stderr
    with open(path, "a", buffering=1) as log_file:
        handler = logging.StreamHandler(log_file)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        sys.stderr = log_file  # tqdm and warnings write here
        try:
            _set_up(info, uses_torch, resolve_device=device_name is not None)
            yield info
        except BaseException as err:
            if not (isinstance(err, SystemExit) and err.code in (0, None)):
                traceback.print_exception(err, file=log_file)
                log_file.flush()
            raise
        finally:
            sys.stderr = old_stderr
            root.removeHandler(handler)
            root.setLevel(old_level)


def _set_up(info: Job, uses_torch: bool, resolve_device: bool) -> None:
    """Seed python and numpy (and torch), set torch's threads, resolve the device."""
    if info.seed is not None:
        random.seed(info.seed)
        np.random.seed(info.seed)  # noqa: NPY002 (the legacy global generator is what we seed)
    if not uses_torch:
        return
    import torch

    torch.set_num_threads(info.threads)
    if info.seed is not None:
        torch.manual_seed(info.seed)
    if resolve_device:
        info.log.info("device %s", info.device)
