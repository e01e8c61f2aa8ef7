"""Download or check one image-folder dataset before extraction (see saeprobe.data.prepare)."""

from saeprobe.data.prepare import prepare_imagefolder
from saeprobe.io import atomic_write_json
from saeprobe.jobs import job

with job(snakemake) as j:
    summary = prepare_imagefolder(snakemake.wildcards.dataset, j.params.spec, j.params.data_dir)
    j.log.info("%s", summary)
    atomic_write_json(snakemake.output[0], summary)
