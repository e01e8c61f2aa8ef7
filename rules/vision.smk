# Vision-embedding tasks: semantics, OOD detection, OOD generalization, ontology.


def vision_targets() -> list[str]:
    return []
