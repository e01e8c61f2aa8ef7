"""Snakemake script (rule train_world_llava): train the world's tiny LLaVA captioner and score it.

params: llava (the `mllm.world_llava` config section), shuffle_captions (the model spec's
flag: the negative control of the crossmodal claim), seed. input: the world CLIP and the world.
output: the save_pretrained directory (model + processor), train_info.json and, beside them,
accuracy.csv: the caption accuracy (model, attribute, split, accuracy, chance, n) on the world's
test split (rule world_llava_table copies it to the tables).
"""

from pathlib import Path

from saeprobe.io import atomic_write_csv
from saeprobe.jobs import job
from saeprobe.world.llava import train_and_score_world_llava

inp, out = snakemake.input, snakemake.output
with job(snakemake) as j:
    table = train_and_score_world_llava(
        j.params.llava,
        int(j.params.seed),
        world_dir=Path(inp.vocab).parent,
        clip_dir=Path(inp.clip).parent,
        out_dir=Path(out.model).parent,
        info_file=out.info,
        shuffle_captions=bool(j.params.shuffle_captions),
    )
    atomic_write_csv(out.accuracy, table)
