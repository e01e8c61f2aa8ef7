"""Collect one vision task's per-model tables into results/tables/ and draw its figures."""

from saeprobe.jobs import job
from saeprobe.plots.vision import write_task_table

with job(snakemake):
    write_task_table(
        snakemake.params.task,
        snakemake.input.tables,
        snakemake.input.get("units", []),
        dict(snakemake.output.items()),
    )
