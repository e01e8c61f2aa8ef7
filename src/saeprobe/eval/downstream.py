"""Downstream accuracy with an SAE spliced into the model, for `downstream_recovered`.

The downstream task is zero-shot classification with the model's own text tower (open_clip
and world CLIPs): class prompts are embedded once, images are embedded with the residual stream
at the SAE's site replaced, and the nearest class prompt is the prediction. Three runs give
clean accuracy, SAE accuracy and mean-ablation accuracy (the site replaced by the mean
activation of its training store); `saeprobe.sae.downstream_recovered` turns them into the
fraction of the clean accuracy the SAE keeps, measured from the ablation floor.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from saeprobe.backbones import Backbone
from saeprobe.data import ImageDataset

Replace = Callable[[Tensor], Tensor]
TEMPLATES = ("a photo of a {}.",)


def has_text_tower(spec: Mapping) -> bool:
    return spec.get("source") in ("world", "open_clip")


@torch.no_grad()
def text_classifier(
    model: torch.nn.Module,
    tokenizer: Callable[[list[str]], Tensor],
    class_names: Sequence[str],
    templates: Sequence[str] = TEMPLATES,
) -> Tensor:
    """Unit-norm class embeddings (C, embed_dim) of an open_clip CLIP, averaged over templates."""
    device = next(model.parameters()).device
    rows = []
    for name in class_names:
        tokens = tokenizer([t.format(name) for t in templates]).to(device)
        emb = model.encode_text(tokens, normalize=True).float().mean(0)
        rows.append(emb / emb.norm())
    return torch.stack(rows)


def site_patch(tokens: str, replace: Replace) -> Callable[[Tensor], Tensor]:
    """A residual-stream patch (B, T, d) -> (B, T, d) that applies `replace` to a token set.

    `replace` maps (n, d) activations to (n, d); cls touches token 0, patches tokens 1.., all
    every token. `mean` sites cannot be spliced (the mean is not a token of the stream).
    """

    def patch(x: Tensor) -> Tensor:
        out = x.clone()
        b, t, d = x.shape
        if tokens == "cls":
            out[:, 0] = replace(x[:, 0])
        elif tokens == "patches":
            out[:, 1:] = replace(x[:, 1:].reshape(-1, d)).reshape(b, t - 1, d)
        elif tokens == "all":
            out = replace(x.reshape(-1, d)).reshape(b, t, d)
        else:
            raise ValueError(f"tokens {tokens!r} cannot be spliced back into the model")
        return out

    return patch


@torch.no_grad()
def zero_shot_accuracies(
    backbone: Backbone,
    dataset: ImageDataset,
    classifier: Tensor,
    targets: np.ndarray,
    layer: int | None,
    tokens: str | None,
    replacements: Mapping[str, Replace | None],
    batch_size: int = 256,
) -> dict[str, float]:
    """Zero-shot accuracy of each replacement of a site, over the whole dataset.

    classifier: (C, embed_dim) unit-norm; targets: (N,) class index per image; layer None means
    the `pooled` site (the replacement acts on the image embedding itself); a replacement of None
    is the clean model. Returns {replacement name: accuracy}.
    """
    n = len(dataset)
    correct = dict.fromkeys(replacements, 0)
    seen = 0
    ranges = [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    for batch in dataset.iter_batches(ranges):
        pixels = backbone.prepare(batch.images)
        truth = torch.as_tensor(targets[batch.indices], device=classifier.device)
        for name, replace in replacements.items():
            if replace is None:
                emb = backbone.embed(pixels)
            elif layer is None:
                emb = replace(backbone.embed(pixels).float())
            else:
                emb = backbone.forward_with_patch(pixels, layer, site_patch(tokens, replace))
            emb = emb.float()
            pred = (emb / emb.norm(dim=-1, keepdim=True)) @ classifier.T
            correct[name] += int((pred.argmax(-1) == truth).sum())
        seen += len(batch.indices)
    return {name: c / max(seen, 1) for name, c in correct.items()}
