"""Masked copies stored as a few distinct rows ("slots") instead of T token rows.

A masked copy of F is mostly zero rows, and zero rows are all the same row.
So a copy is stored as U slots: slot ``u`` holds token ``token[u]`` of F
scaled by ``weight[u]`` and stands for ``count[u]`` tokens of the copy;
``token_slot[t]`` names the slot of token ``t``. Prefix tokens keep slots
``0..P-1``, every patch token with a non-zero weight gets its own slot, and
all zero-weight patch tokens share the last slot. With a 3x3 kernel that is
``U = P + 10`` slots instead of ``T = P + h*w`` rows.

Attention over slots is exact when each key's softmax weight is multiplied
by its count (``+ log count`` on the scores, rewrites/slots.py): identical
keys contribute identically, identical queries get identical outputs.
Unused slots get a count of zero (``log count = EMPTY``).

:func:`identity_slots` stores copies one slot per token (``U = T``), the form
the plain suffix takes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EMPTY = np.float32(-30000.0)  # log count of an unused slot: exp() is exactly 0, and it fits float16


@dataclass(frozen=True)
class Slots:
    """The slot tables of n masked copies."""

    token: np.ndarray  # int64 [n, U]: the token of F each slot holds
    weight: np.ndarray  # float32 [n, U]: its weight
    log_count: np.ndarray  # float32 [n, U]: log of the number of tokens it stands for (EMPTY: none)
    token_slot: np.ndarray  # int64 [n, T]: the slot of every token

    def __len__(self) -> int:
        return len(self.token)

    def __getitem__(self, rows: slice | list[int]) -> Slots:
        return Slots(self.token[rows], self.weight[rows], self.log_count[rows], self.token_slot[rows])

    @property
    def token_weight(self) -> np.ndarray:
        """The per-token weights [n, T] these slots encode."""
        return np.take_along_axis(self.weight, self.token_slot, axis=1)


def copy_slots(weights: np.ndarray, prefix_tokens: int, compact: bool) -> Slots:
    """The slot tables a suffix takes: compact if it runs attention on distinct rows, else one per token."""
    return compact_slots(weights, prefix_tokens) if compact else identity_slots(weights)


def identity_slots(weights: np.ndarray) -> Slots:
    """One slot per token: ``U = T``, every count 1."""
    n, tokens = weights.shape
    index = np.broadcast_to(np.arange(tokens, dtype=np.int64), (n, tokens)).copy()
    return Slots(index, np.ascontiguousarray(weights, np.float32), np.zeros((n, tokens), np.float32), index.copy())


def compact_slots(weights: np.ndarray, prefix_tokens: int) -> Slots:
    """Prefix tokens, then the non-zero patch tokens, then one slot shared by the zero patch tokens."""
    n, tokens = weights.shape
    patches = weights[:, prefix_tokens:] != 0
    nonzero = int(patches.sum(axis=1).max(initial=0))
    width = prefix_tokens + nonzero + 1
    zero_slot = width - 1
    token = np.zeros((n, width), np.int64)
    weight = np.zeros((n, width), np.float32)
    log_count = np.full((n, width), EMPTY, np.float32)
    token_slot = np.full((n, tokens), zero_slot, np.int64)
    token[:, :prefix_tokens] = np.arange(prefix_tokens)
    weight[:, :prefix_tokens] = weights[:, :prefix_tokens]
    log_count[:, :prefix_tokens] = 0.0
    token_slot[:, :prefix_tokens] = np.arange(prefix_tokens)
    for row in range(n):
        kept = prefix_tokens + np.flatnonzero(patches[row])
        slots = prefix_tokens + np.arange(len(kept))
        token[row, slots] = kept
        weight[row, slots] = weights[row, kept]
        log_count[row, slots] = 0.0
        token_slot[row, kept] = slots
        zeros = tokens - prefix_tokens - len(kept)
        if zeros:
            log_count[row, zero_slot] = np.log(np.float32(zeros))
    return Slots(token, weight, log_count, token_slot)
