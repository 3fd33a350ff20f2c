"""A decoder-only transformer for in-context learning (Kirsch et al. 2022, the GPICL experiment on MNIST), as GPT-2
builds one: pre-norm blocks of causal self-attention and a feed-forward layer of GELU units, learned positions, a
final LayerNorm and a linear read-out. The experiment's size is 4 blocks, 1 head, model width d, feed-forward
width 4 d and 100 positions.

A sequence holds examples of one task (tasks.draw_sequences). Token t is the projected input x_t beside the
one-hot label of the example before it, y_{t-1} (zeros at t = 0). From every position the network predicts y_t,
so position t has seen t labelled examples: accuracy by position is the in-context learning curve.

The sizes that can shrink are each block's feed-forward units, the head's query-key and value-output
dimensions, and the residual width all blocks share. They are separate arguments here so that a rebuild can
set each one. The family seam (models.base), the rank groups and their folds are not wired yet (issue 22).
Attention runs through torch's fused scaled_dot_product_attention with is_causal=True.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["Transformer", "Block", "tokens"]


class Block(nn.Module):
    """x + attention(LN(x)), then x + feed-forward(LN(x)); one head of query-key width `qk` and value width `vo`."""

    def __init__(self, width: int, ff: int, qk: int, vo: int):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.q, self.k = nn.Linear(width, qk), nn.Linear(width, qk)
        self.v, self.o = nn.Linear(width, vo), nn.Linear(vo, width)
        self.up, self.down = nn.Linear(width, ff), nn.Linear(ff, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln1(x)  # (B, T, width)
        q, k, v = self.q(h).unsqueeze(1), self.k(h).unsqueeze(1), self.v(h).unsqueeze(1)  # one head: (B, 1, T, .)
        # scale 1/sqrt(qk), as GPT-2; is_causal: position t attends to positions <= t only
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=True).squeeze(1)
        x = x + self.o(attended)
        return x + self.down(F.gelu(self.up(self.ln2(x))))


class Transformer(nn.Module):
    """(B, T, d_in + n_classes) tokens -> (B, T, n_classes) logits, position t predicting example t's label."""

    def __init__(self, d_in: int, n_classes: int, width: int, blocks: int = 4, ff: int | None = None,
                 qk: int | None = None, vo: int | None = None, positions: int = 100):
        super().__init__()
        self.d_in, self.n_classes, self.positions = d_in, n_classes, positions
        self.embed = nn.Linear(d_in + n_classes, width)
        self.position = nn.Parameter(torch.zeros(positions, width))
        nn.init.normal_(self.position, std=0.02)  # GPT-2's initialisation of learned positions
        self.blocks = nn.ModuleList(Block(width, ff or 4 * width, qk or width, vo or width) for _ in range(blocks))
        self.ln = nn.LayerNorm(width)
        self.read_out = nn.Linear(width, n_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        length = tokens.shape[1]
        if length > self.positions:
            raise ValueError(f"a sequence of {length} tokens is longer than the {self.positions} positions")
        x = self.embed(tokens) + self.position[:length]
        for block in self.blocks:
            x = block(x)
        return self.read_out(self.ln(x))


def tokens(x: torch.Tensor, y: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Sequences of examples (x (B, T, d) inputs, y (B, T) labels) as tokens (B, T, d + K): each input beside the
    previous example's one-hot label, zeros at the first position (the network never sees its own label)."""
    previous = torch.zeros(*y.shape, n_classes, dtype=x.dtype, device=x.device)
    previous[:, 1:] = F.one_hot(y[:, :-1], n_classes).to(x.dtype)
    return torch.cat([x, previous], dim=-1)
