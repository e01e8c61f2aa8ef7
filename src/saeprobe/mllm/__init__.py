"""Multimodal LLM (LLaVA) stage: the world's tiny LLaVA, token extraction, the mixture SAE.

Modules: `build` (tokenizer, processor, model; `load_mllm` = from_pretrained for world and hub
models), `train` (the world LLaVA's three-stage captioning training), `data` (world and COCO
examples with concept labels), `extract` (image- and caption-token residual activations), `sae`
(mixture SAE training and `evaluate_crossmodal`; statistics in `saeprobe.eval.crossmodal`).
"""
