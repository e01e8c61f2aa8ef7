"""Multimodal LLM (LLaVA) stage: token extraction and the mixture SAE.

Modules: `build` (tokenizer, processor, model; `load_mllm` = from_pretrained for world and hub
models), `data` (world and COCO examples with concept labels), `extract` (image- and
caption-token residual activations), `sae` (mixture SAE training and `evaluate_crossmodal`;
statistics in `saeprobe.eval.crossmodal`). The world LLaVA's training is `saeprobe.world.llava`.
"""
