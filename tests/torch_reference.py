"""An independent PyTorch ViT-ReciproCAM, written from docs/algorithm.md for the tests.

It hooks the target block of the torch model: a pre-hook captures the block's
input R (and masks it for residual="masked"); a forward hook on the block's
first LayerNorm replaces its output F by the h*w masked copies, built with
explicit loops over cells; the rest of the torch model then runs as is.
Run it on a float64 copy of the model (``as_float64``): the masked-residual
variant feeds near-constant rows to LayerNorms with eps ~1e-12, where float32
noise grows to 1e-5.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

GAUSS = [[1 / 16, 1 / 8, 1 / 16], [1 / 8, 1 / 4, 1 / 8], [1 / 16, 1 / 8, 1 / 16]]


def reference_weights(
    grid: tuple[int, int], prefix: int, kernel: str, cls_token: bool, window: str = "kept"
) -> np.ndarray:
    """[h*w, P + h*w] token weights, one cell at a time; a removed window weighs patch tokens by
    1 - kernel / (the kernel's peak)."""
    h, w = grid
    out = np.zeros((h * w, prefix + h * w), dtype=np.float64)
    peak = 1.0 if kernel == "1x1" else GAUSS[1][1]
    for i in range(h):
        for j in range(w):
            k = i * w + j
            out[k, :prefix] = 1.0 if cls_token else 0.0
            if window == "removed":
                out[k, prefix:] = 1.0
            for dy in (-1, 0, 1) if kernel == "3x3" else (0,):
                for dx in (-1, 0, 1) if kernel == "3x3" else (0,):
                    y, x = i + dy, j + dx
                    if 0 <= y < h and 0 <= x < w:
                        weight = GAUSS[dy + 1][dx + 1] if kernel == "3x3" else 1.0
                        out[k, prefix + y * w + x] = weight if window == "kept" else 1.0 - weight / peak
    return out


def as_float64(model: torch.nn.Module) -> torch.nn.Module:
    """A float64 copy of ``model`` for the reference computation."""
    return copy.deepcopy(model).double()


def _minmax(m: np.ndarray) -> np.ndarray:
    span = m.max() - m.min()
    return np.zeros_like(m) if span == 0 else (m - m.min()) / span


@torch.no_grad()
def reference_scores(
    model,
    block: torch.nn.Module,
    norm: torch.nn.Module,
    image: np.ndarray,
    weights: np.ndarray,
    residual: str,
    score: str,
    per_copy: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """(unmasked scores [C], per-cell scores [h*w, C]) for one image [3, H, W]; ``per_copy`` runs the
    copies one at a time (for models that read their batch size from the block's input)."""
    if per_copy:
        runs = [reference_scores(model, block, norm, image, w[None], residual, score) for w in weights]
        return runs[0][0], np.concatenate([cells for _, cells in runs])
    dtype, device = next(model.parameters()).dtype, next(model.parameters()).device
    x = torch.from_numpy(image[None]).to(device, dtype)
    convert = (lambda z: torch.softmax(z.double(), -1)) if score == "softmax" else (lambda z: z.double())
    unmasked = convert(model(x))[0]
    wt = torch.from_numpy(weights).to(device, dtype)[:, :, None]
    seen = {}

    def laid_out(t: torch.Tensor) -> torch.Tensor:  # weights per token: [n, T, 1], or [n, h, w, 1] for a grid
        return wt.reshape(len(wt), *t.shape[1:-1], 1)

    def pre_hook(module, args, kwargs):
        key = "hidden_states" if not args else None
        r = kwargs[key] if key else args[0]
        seen["R"] = r
        if residual == "masked":
            if key:
                return args, {**kwargs, key: laid_out(r) * r}
            return (laid_out(r) * r, *args[1:]), kwargs
        return None

    def norm_hook(module, args, output):
        f = F.layer_norm(seen["R"], module.normalized_shape, module.weight, module.bias, module.eps)
        return laid_out(f) * f

    handles = [block.register_forward_pre_hook(pre_hook, with_kwargs=True), norm.register_forward_hook(norm_hook)]
    try:
        cells = convert(model(x))
    finally:
        for handle in handles:
            handle.remove()
    return unmasked.cpu().numpy(), cells.cpu().numpy()


@dataclass(frozen=True)
class Reference:
    maps: np.ndarray  # [B, h, w] for the targets
    targets: np.ndarray  # [B]
    all_maps: np.ndarray  # [B, C, h, w]
    unmasked: np.ndarray  # [B, C]
    cells: np.ndarray  # [B, h*w, C]


def reference_explain(
    model,
    block,
    norm,
    images: np.ndarray,
    grid,
    prefix,
    kernel="3x3",
    cls_token=True,
    score="softmax",
    residual="unmasked",
    targets=None,
    per_copy=False,
    window="kept",
) -> Reference:
    """ViT-ReciproCAM exactly as docs/algorithm.md defines it, image by image (a removed window's
    evidence is the negated score)."""
    weights = reference_weights(grid, prefix, kernel, cls_token, window)
    runs = [reference_scores(model, block, norm, image, weights, residual, score, per_copy) for image in images]
    unmasked = np.stack([u for u, _ in runs])
    cells = np.stack([c for _, c in runs])
    chosen = unmasked.argmax(axis=1) if targets is None else np.asarray(targets)
    sign = 1.0 if window == "kept" else -1.0
    all_maps = np.stack([[_minmax(sign * c[:, k]).reshape(grid) for k in range(c.shape[1])] for c in cells])
    return Reference(all_maps[np.arange(len(images)), chosen], chosen, all_maps, unmasked, cells)


def reference_rollout(attentions: list[torch.Tensor], prefix: int, grid: tuple[int, int]) -> np.ndarray:
    """Attention rollout (Abnar & Zuidema 2020) from each block's attention probabilities [B, heads, T, T]:
    heads averaged, ``(A + I) / 2`` row-normalised, multiplied from the first block up; the first prefix
    token's row (or the mean row without one) over the patch tokens, min-max normalised [B, h, w]."""
    flow = None
    for probabilities in attentions:
        a = probabilities.double().mean(dim=1)
        a = (a + torch.eye(a.shape[-1], dtype=a.dtype)) / 2
        a = a / a.sum(dim=-1, keepdim=True)
        flow = a if flow is None else a @ flow
    rows = flow[:, 0] if prefix else flow.mean(dim=1)
    maps = rows[:, prefix:].reshape(len(rows), *grid).numpy()
    return np.stack([_minmax(m) for m in maps])
