"""Scoring generated images: CLIP image-text scores, preservation, a direct colour measurement.

A `Scorer` wraps an open_clip CLIP (paper: ViT-L-14 laion2b_s32b_b82k; world: the world CLIP):
`images(uint8 (n, H, W, 3)) -> (n, e)` and `texts(list[str]) -> (m, e)`, both L2-normalised.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD


class Scorer:
    """CLIP embeddings of uint8 images (resized to the model's input size) and of texts."""

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Callable[[list[str]], torch.Tensor],
        batch_size: int = 256,
    ):
        self.model = model.eval()
        self.tokenizer = tokenizer
        # the inverse temperature the CLIP was trained with (CLIP's own cap: 100)
        scale = getattr(model, "logit_scale", None)
        self.logit_scale = float(scale.exp()) if scale is not None else 100.0
        self.batch_size = batch_size
        size = getattr(model.visual, "image_size", 224)
        self.size = int(size[0] if isinstance(size, tuple | list) else size)
        self.device = next(model.parameters()).device
        self.mean = torch.tensor(OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
        self.std = torch.tensor(OPENAI_DATASET_STD).view(1, 3, 1, 1)

    @torch.no_grad()
    def images(self, images: np.ndarray) -> torch.Tensor:
        """uint8 (n, H, W, 3) -> normalised embeddings (n, e), float32 on CPU."""
        out = []
        for i in range(0, len(images), self.batch_size):
            x = torch.from_numpy(np.ascontiguousarray(images[i : i + self.batch_size]))
            x = x.permute(0, 3, 1, 2).float().div_(255.0)
            if x.shape[-1] != self.size or x.shape[-2] != self.size:
                x = F.interpolate(
                    x, size=(self.size, self.size), mode="bicubic", antialias=True
                ).clamp_(0, 1)
            x = ((x - self.mean) / self.std).to(self.device)
            dtype = next(self.model.parameters()).dtype
            out.append(self.model.encode_image(x.to(dtype), normalize=True).float().cpu())
        return torch.cat(out)

    @torch.no_grad()
    def texts(self, texts: Sequence[str]) -> torch.Tensor:
        """list of m texts -> normalised embeddings (m, e), float32 on CPU."""
        ids = self.tokenizer(list(texts)).to(self.device)
        return self.model.encode_text(ids, normalize=True).float().cpu()


def clip_scores(image_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
    """Cosine similarities (n, m) of normalised image (n, e) and text (m, e) embeddings."""
    return image_emb @ text_emb.T


def group_probabilities(scores: torch.Tensor, groups: Sequence[str], scale: float) -> torch.Tensor:
    """Zero-shot probabilities (n, A) from cosine scores (n, A): a softmax of scale * score over
    the attributes of each group (groups: (A,) group names; the attributes of a group exclude
    each other, as the colours of a shape do), so that attributes of different groups, and
    texts whose scores spread more or less, are on one scale."""
    out = torch.empty_like(scores)
    names = np.asarray(groups)
    for group in dict.fromkeys(groups):
        idx = torch.from_numpy(np.flatnonzero(names == group))
        out[:, idx] = torch.softmax(scale * scores[:, idx], dim=1)
    return out


def preservation(steered: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """Cosine similarity (n,) of each steered image's embedding to its unsteered twin's."""
    return (F.normalize(steered, dim=-1) * F.normalize(base, dim=-1)).sum(-1)


def pixel_mse(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean squared difference (n,) of uint8 images (n, H, W, 3), in [0, 1] units."""
    d = a.astype(np.float32) / 255.0 - b.astype(np.float32) / 255.0
    return (d**2).reshape(len(a), -1).mean(1)


def colour_fractions(
    images: np.ndarray, colours: Mapping[str, Sequence[int]], min_chroma: float = 60.0
) -> dict[str, np.ndarray]:
    """Per named colour, the fraction (n,) of each image's pixels nearest to it.

    Only chromatic pixels count (max(RGB) - min(RGB) >= min_chroma; the world's backgrounds are
    grey), and each goes to its nearest named colour in RGB.
    """
    names = list(colours)
    ref = np.array([colours[c] for c in names], np.float32)  # (k, 3)
    px = images.reshape(len(images), -1, 3).astype(np.float32)  # (n, p, 3)
    chroma = px.max(-1) - px.min(-1)
    dist = ((px[:, :, None, :] - ref[None, None]) ** 2).sum(-1)  # (n, p, k)
    nearest = dist.argmin(-1)
    valid = chroma >= min_chroma
    return {c: ((nearest == i) & valid).mean(1) for i, c in enumerate(names)}
