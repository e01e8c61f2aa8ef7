"""Write the latent atlas: a page per SAE of every alive latent, thumbnails once per dataset."""

from pathlib import Path

from saeprobe.atlas.build import AtlasSae, AtlasSettings, build_atlas
from saeprobe.jobs import job

inp, out, p = snakemake.input, snakemake.output, snakemake.params
with job(snakemake, use_torch=True):
    build_atlas(
        [AtlasSae(**s) for s in p.saes],
        {**p.tables, "crossmodal": p.crossmodal},
        Path(out.index).parent,
        AtlasSettings.from_dict(p.settings),
        p.setting,
        strips=inp.get("strips"),
    )
