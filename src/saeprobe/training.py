"""Mechanisms every trainer shares: the learning-rate schedule, checkpoints, the fingerprint.

Schedule: `warmup_cosine` (linear warmup, then cosine decay to a floor).

Checkpoint set (one directory per trainer stage), never pickled:
  step_XXXXXXXXX.<part>.safetensors   one file per part (e.g. "model", "optimizer", "data")
  step_XXXXXXXXX.json                 written last: {"step", "parts", ...the trainer's state}
A step counts only when its JSON exists and every part it lists is on disk, so a checkpoint
half-written by a kill is never taken; `save_checkpoint` keeps the newest `keep` (2). Optimizer
state goes through `optimizer_tensors` / `load_optimizer_tensors` (tensors keyed
"<param index>.<name>", the indices of `Optimizer.state_dict`).

Fingerprint: a hash of the settings that determine the weights (canonical JSON) and of the
*content* of the input files (sha256, cached per (path, size, mtime, inode)); a checkpoint made
with other settings or inputs is discarded (`Checkpoints.resume` logs what changed) and training
starts from scratch.

torch and safetensors are imported only where tensors are handled, so fingerprints are cheap.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from saeprobe.io import atomic_save_tensors, atomic_write_json

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

# -- learning-rate schedule -------------------------------------------------------------------


def warmup_cosine(step: int, total: int, base: float, warmup: int, min_ratio: float) -> float:
    """Learning rate of step `step` (0-based) of `total`.

    Linear warmup base * (step + 1) / warmup over the first `warmup` steps, then cosine decay
    from `base` to `base * min_ratio` at step `total`, constant after it.
    """
    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    floor = base * min_ratio
    return floor + 0.5 * (base - floor) * (1 + math.cos(math.pi * min(1.0, t)))


# -- fingerprint ------------------------------------------------------------------------------

_DIGESTS: dict[tuple[str, int, int, int, int], str] = {}


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes, cached in-process by (path, size, mtime, ctime, inode)."""
    path = Path(path).resolve()
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    digest = _DIGESTS.get(key)
    if digest is None:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 22):
                h.update(chunk)
        digest = _DIGESTS[key] = h.hexdigest()
    return digest


def _canonical(settings: Mapping[str, Any]) -> dict[str, Any]:
    """`settings` as plain JSON values (tuples -> lists, Paths -> str), keys sorted."""

    def default(value: Any) -> Any:
        if isinstance(value, Path):
            return str(value)
        raise TypeError(f"fingerprint settings: {type(value).__name__} is not JSON ({value!r})")

    return json.loads(json.dumps(dict(settings), sort_keys=True, default=default))


@dataclass(frozen=True)
class Fingerprint:
    """What a trainer's result depends on: settings (plain JSON) and (name, sha256) per input."""

    settings: dict[str, Any]
    inputs: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, settings: Mapping[str, Any], inputs: Sequence[str | Path] = ()) -> Fingerprint:
        return cls(_canonical(settings), tuple((str(p), file_digest(p)) for p in inputs))

    @property
    def digest(self) -> str:
        """sha256 of the settings and the inputs' contents (not their paths)."""
        blob = json.dumps(
            {"settings": self.settings, "inputs": [d for _, d in self.inputs]},
            sort_keys=True,
            separators=(",", ":"),
        )
        return hashlib.sha256(blob.encode()).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        return {"digest": self.digest, "settings": self.settings, "inputs": list(self.inputs)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Fingerprint:
        return cls(dict(d["settings"]), tuple((str(n), str(h)) for n, h in d["inputs"]))

    def changes(self, old: Fingerprint) -> list[str]:
        """What differs from `old`, in words: settings keys, inputs whose content changed."""
        out = []
        keys = sorted(set(self.settings) | set(old.settings))
        changed = [k for k in keys if self.settings.get(k) != old.settings.get(k)]
        if changed:
            shown = ", ".join(
                f"{k}: {old.settings.get(k)!r} -> {self.settings.get(k)!r}" for k in changed
            )
            out.append(f"settings changed ({shown})")
        if len(self.inputs) != len(old.inputs):
            out.append(f"inputs changed ({len(old.inputs)} files, now {len(self.inputs)})")
        else:
            for (name, new), (_, was) in zip(self.inputs, old.inputs, strict=True):
                if new != was:
                    out.append(f"input {name} changed (content sha256 {was[:12]} -> {new[:12]})")
        return out


def fingerprint(settings: Mapping[str, Any], inputs: Sequence[str | Path] = ()) -> str:
    """Hex digest of `settings` (canonical JSON) and the bytes of the `inputs` files."""
    return Fingerprint.of(settings, inputs).digest


# -- checkpoint set ---------------------------------------------------------------------------

_PART = re.compile(r"^[A-Za-z0-9_-]+$")
_FILE = re.compile(r"^step_(\d+)\.")


class Checkpoint(NamedTuple):
    step: int
    tensors: dict[str, dict[str, torch.Tensor]]
    state: dict[str, Any]


def _stem(directory: Path, step: int) -> str:
    return str(directory / f"step_{step:09d}")


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def checkpoint_steps(directory: str | Path) -> list[int]:
    """Steps of the complete checkpoints in `directory` (JSON and every listed part), ascending."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    steps = []
    for path in directory.glob("step_*.json"):
        m = re.fullmatch(r"step_(\d+)\.json", path.name)
        meta = _read_json(path) if m else None
        if meta is None or not isinstance(meta.get("parts"), list):
            continue
        step = int(m.group(1))
        if all(Path(f"{_stem(directory, step)}.{p}.safetensors").is_file() for p in meta["parts"]):
            steps.append(step)
    return sorted(steps)


def save_checkpoint(
    directory: str | Path,
    step: int,
    tensors: Mapping[str, Mapping[str, torch.Tensor]],
    state: Mapping[str, Any] | None = None,
    keep: int = 2,
) -> None:
    """Write checkpoint `step`: one safetensors file per part, then the JSON that completes it.

    tensors: {part: state dict} (part names [A-Za-z0-9_-]); state: JSON-able trainer state
    (stored with "step" and "parts"). Then every other step but the newest `keep` is removed,
    leftovers of half-written checkpoints included.
    """
    directory = Path(directory)
    state = dict(state or {})
    if "parts" in state or state.get("step", step) != step:
        raise ValueError("checkpoint state: 'parts' and 'step' are set by save_checkpoint")
    for part in tensors:
        if not _PART.match(part):
            raise ValueError(f"checkpoint part name {part!r}: expected [A-Za-z0-9_-]+")
    stem = _stem(directory, step)
    for part, sd in tensors.items():
        atomic_save_tensors(f"{stem}.{part}.safetensors", sd)
    atomic_write_json(f"{stem}.json", {**state, "step": step, "parts": sorted(tensors)})
    kept = set(checkpoint_steps(directory)[-max(1, keep) :])
    for path in directory.iterdir():
        m = _FILE.match(path.name)
        stale_tmp = path.name.startswith(".step_") and path.name.endswith(".tmp")
        if (m and int(m.group(1)) not in kept) or stale_tmp:
            path.unlink(missing_ok=True)


def load_checkpoint(directory: str | Path, step: int) -> Checkpoint:
    """Checkpoint `step` of `directory`: (step, {part: tensors on CPU}, state without "parts")."""
    from safetensors.torch import load_file

    directory = Path(directory)
    meta = _read_json(Path(f"{_stem(directory, step)}.json"))
    if meta is None:
        raise FileNotFoundError(f"{_stem(directory, step)}.json: no readable checkpoint")
    parts = meta.pop("parts")
    tensors = {p: load_file(f"{_stem(directory, step)}.{p}.safetensors") for p in parts}
    return Checkpoint(step, tensors, meta)


def latest_checkpoint(directory: str | Path) -> Checkpoint | None:
    """The newest complete checkpoint in `directory`, or None."""
    steps = checkpoint_steps(directory)
    return load_checkpoint(directory, steps[-1]) if steps else None


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """An optimizer's per-parameter state as tensors "<index>.<name>" (non-tensors as 0-d)."""
    import torch

    out = {}
    for i, state in optimizer.state_dict()["state"].items():
        for name, value in state.items():
            out[f"{i}.{name}"] = value if torch.is_tensor(value) else torch.tensor(value)
    return out


def load_optimizer_tensors(
    optimizer: torch.optim.Optimizer, tensors: Mapping[str, torch.Tensor]
) -> None:
    """Restore `optimizer_tensors` output (through `load_state_dict`: devices, dtypes, step)."""
    sd = optimizer.state_dict()
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        i, name = key.split(".", 1)
        state.setdefault(int(i), {})[name] = value
    sd["state"] = state
    optimizer.load_state_dict(sd)


class Checkpoints:
    """A trainer's checkpoint directory, keyed on the fingerprint of its settings and inputs.

    `resume()` returns the newest complete checkpoint made with this fingerprint; one made with
    another is deleted with a log line naming what changed, and None is returned (train from
    scratch). `save` records the fingerprint with every checkpoint; `clear` removes the directory.
    """

    def __init__(self, directory: str | Path, fp: Fingerprint, keep: int = 2, name: str = ""):
        self.directory = Path(directory)
        self.fingerprint = fp
        self.keep = keep
        self.name = name or str(self.directory)

    def resume(self) -> Checkpoint | None:
        steps = checkpoint_steps(self.directory)
        if not steps:
            return None
        meta = _read_json(Path(f"{_stem(self.directory, steps[-1])}.json")) or {}
        saved = meta.get("fingerprint")
        try:
            old = Fingerprint.from_dict(saved) if isinstance(saved, dict) else None
        except (KeyError, TypeError, ValueError):
            old = None
        if old is None or old.digest != self.fingerprint.digest:
            why = (
                "it records no fingerprint"
                if old is None
                else "; ".join(self.fingerprint.changes(old) or ["fingerprint changed"])
            )
            log.warning(
                "%s: discarding the checkpoint at step %d (%s); training from scratch",
                self.name,
                steps[-1],
                why,
            )
            self.clear()
            return None
        ckpt = load_checkpoint(self.directory, steps[-1])
        log.info("%s: resuming from the checkpoint at step %d", self.name, ckpt.step)
        return ckpt

    def save(
        self,
        step: int,
        tensors: Mapping[str, Mapping[str, torch.Tensor]],
        state: Mapping[str, Any] | None = None,
    ) -> None:
        full = {**(state or {}), "fingerprint": self.fingerprint.to_dict()}
        save_checkpoint(self.directory, step, tensors, full, self.keep)

    def clear(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


__all__ = [
    "Checkpoint",
    "Checkpoints",
    "Fingerprint",
    "checkpoint_steps",
    "file_digest",
    "fingerprint",
    "latest_checkpoint",
    "load_checkpoint",
    "load_optimizer_tensors",
    "optimizer_tensors",
    "save_checkpoint",
    "warmup_cosine",
]
