# Multimodal LLM: one SAE over image and text tokens of a LLaVA-style model (crossmodal).


def mllm_targets() -> list[str]:
    return []
