"""Build the miniature hub, serve it on loopback and run the paper config against it, offline.

    python -m saeprobe.rehearsal [--workdir rehearsal] [--no-build] [SNAKEMAKE ARGS ...]

The configs are `configs/paper.yaml` then `configs/rehearsal.yaml`; the port is the one the
overlay's URLs name. Extra arguments go to snakemake (default `--cores 2`; targets, a
`--workflow-profile`, ...). The exit status is snakemake's.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

from saeprobe.rehearsal.build import FILES, build_files, build_models, load_configs, on_hub
from saeprobe.rehearsal.serve import serving

ROOT = Path(__file__).resolve().parents[3]
CONFIGS = [ROOT / "configs" / "paper.yaml", ROOT / "configs" / "rehearsal.yaml"]
# nothing may reach a real hub: every model and file must come from the miniature one
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def hub_port(config: dict) -> int:
    """The one port of the loopback hub that every hub URL of `config` names."""
    urls = [spec["download"]["url"] for spec in config["datasets"].values() if "download" in spec]
    ports = {urlparse(url).port for url in urls if on_hub(url)}
    if len(ports) != 1 or None in ports:
        raise ValueError(
            f"{CONFIGS[-1]}: expected every download URL on one loopback port, got {ports}"
        )
    return ports.pop()


def snakemake_command(workdir: Path, extra: list[str]) -> list[str]:
    snakemake = str(Path(sys.executable).with_name("snakemake"))
    configs = [str(c) for c in CONFIGS]
    cores = (
        []
        if any(a.startswith(("--cores", "-c", "--workflow-profile")) for a in extra)
        else ["--cores", "2"]
    )
    return [
        snakemake,
        "--snakefile",
        str(ROOT / "Snakefile"),
        "--configfile",
        *configs,
        "--directory",
        str(workdir),
        *cores,
        *extra,
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=ROOT / "rehearsal")
    parser.add_argument("--no-build", action="store_true", help="reuse the hub already built")
    args, extra = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    config = load_configs(CONFIGS)
    workdir = args.workdir.resolve()
    if not args.no_build:
        workdir.mkdir(parents=True, exist_ok=True)
        build_models(config, workdir)
        build_files(config, workdir)
    env = dict(os.environ, **OFFLINE)
    with serving(workdir / FILES, hub_port(config)):
        return subprocess.run(snakemake_command(workdir, extra), env=env).returncode


if __name__ == "__main__":
    sys.exit(main())
