"""The synthetic world: procedurally generated shapes with a known hierarchy, and its models.

Modules (imported one by one; this package imports nothing, so reading a split never pulls in
torch or open_clip): `config` (WorldConfig, WorldClipConfig, SPLITS), `generate` (`generate_world`
writes `{out}/{split}/images.npy` + `manifest.csv`, `hierarchy.tsv` and `vocab.json`;
`load_split`, `load_vocab`), `shapes`, and the training of every world model: `clip` (the tiny
open_clip CLIP), `diffusion` (the tiny Stable Diffusion), `llava` (the tiny LLaVA captioner);
`hf_text` / `hf_vision` convert the world CLIP's towers to transformers models.
The class hierarchy format is `saeprobe.hierarchy`.
"""
