"""Snakemake script (rule download_prompts): fetch the prompt corpus (resumable, checksummed)."""

from saeprobe.data.download import ensure
from saeprobe.jobs import job

with job(snakemake) as j:
    ensure(j.params.url, snakemake.output[0], j.params.sha256)
