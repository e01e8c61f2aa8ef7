"""Quality metrics of every SAE of one site (NMSE, L0, dead/dense, downstream_recovered).

params: model_name, site, sae_dirs ({name: dir}), model, dataset, downstream, batch_size, seed,
device. output[0]: quality.csv, one row per SAE.
"""

from pathlib import Path

import pandas as pd
from saeprobe.jobs import job

from saeprobe.eval.sae_quality import site_quality
from saeprobe.io import atomic_write_csv
from saeprobe.world.hierarchy import read_hierarchy

with job(snakemake) as j:
    p, inputs = snakemake.params, snakemake.input
    downstream = bool(p.downstream) and "hierarchy" in inputs.keys()
    rows = site_quality(
        list(dict(p.sae_dirs).values()),
        p.model_name,
        p.site,
        Path(inputs.train) / p.site if downstream else None,
        model_spec=p.model,
        dataset_spec=p.dataset if downstream else None,
        class_names=read_hierarchy(inputs.hierarchy).names if downstream else None,
        device=j.device,
        batch_size=int(p.batch_size),
        seed=j.seed,
    )
    atomic_write_csv(snakemake.output[0], pd.DataFrame(rows))
