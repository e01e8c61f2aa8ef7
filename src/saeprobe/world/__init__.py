"""The synthetic world: procedurally generated shapes with a known hierarchy, and its tiny CLIP.

`generate_world` writes `{out}/{split}/images.npy` + `manifest.csv`, `hierarchy.tsv` and
`vocab.json`; `train_world_clip` / `load_world_clip` make and load an open_clip CLIP trained on it.
"""

from saeprobe.world.clip import (
    load_world_clip,
    save_world_clip,
    train_world_clip,
    write_results,
    zero_shot_eval,
)
from saeprobe.world.config import SPLITS, WorldClipConfig, WorldConfig
from saeprobe.world.generate import MANIFEST_COLUMNS, generate_world, load_split, load_vocab
from saeprobe.world.hierarchy import Hierarchy, build_hierarchy, read_hierarchy, write_hierarchy

__all__ = [
    "MANIFEST_COLUMNS",
    "SPLITS",
    "Hierarchy",
    "WorldClipConfig",
    "WorldConfig",
    "build_hierarchy",
    "generate_world",
    "load_split",
    "load_vocab",
    "load_world_clip",
    "read_hierarchy",
    "save_world_clip",
    "train_world_clip",
    "write_hierarchy",
    "write_results",
    "zero_shot_eval",
]
