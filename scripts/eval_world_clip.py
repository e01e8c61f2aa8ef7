"""Zero-shot accuracy of the world CLIP on shape, superclass, colour and background."""

from pathlib import Path

from saeprobe.jobs import job
from saeprobe.world.clip import load_world_clip, write_results, zero_shot_eval

with job(snakemake) as j:
    model, _, tokenizer = load_world_clip(Path(snakemake.input.model).parent, j.device)
    world_dir = Path(snakemake.input.vocab).parent
    rows = zero_shot_eval(model, tokenizer, world_dir, splits=list(j.params.splits))
    j.log.info("zero-shot accuracy:\n%s", "\n".join(map(str, rows)))
    write_results(rows, snakemake.output.table)
