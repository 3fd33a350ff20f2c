"""A decoder-only transformer for in-context learning (Kirsch et al. 2022, the GPICL experiment on MNIST), as GPT-2
builds one: pre-norm blocks of causal self-attention and a feed-forward layer of GELU units, learned positions, a
final LayerNorm and a linear read-out. The experiment's size is 4 blocks, 1 head, model width d, feed-forward
width 4 d and 100 positions.

A sequence holds examples of one task (data.py, tasks.tokens). Token t is the projected input x_t beside the one-hot
label of the example before it, y_{t-1} (zeros at t = 0): input_shape is (positions, d + K). From every position
the network predicts y_t, so position t has seen t labelled examples: accuracy by position is the in-context
learning curve.

Its groups of units (the entries of `widths`, in this order) and how each is measured and folded:
- "residual": the width every block reads and writes. Its activations are the residual stream at every point a
  LayerNorm reads it, centred over features (LayerNorm removes the mean); its weights, every matrix that writes
  to the stream, centred. Its fold is SliceGPT's (Ashkboos et al. 2024) with one rotation for all blocks: LayerNorm
  gains move into the matrices that read them, every writer is centred (nothing reads the mean), and the stream is
  rotated onto its principal components and cut to r - 1 of them, laid in an r-wide stream by an orthonormal
  basis of the mean-free directions (so the narrower LayerNorm's centring is again a no-op) and scaled by
  sqrt(r / D), so that the mean square LayerNorm divides by (with its eps) is unchanged. Exact at full width and
  for a stream that spans at most r - 1 directions; a width of r carries r - 1 directions (Group.offset).
- per block "query-key": the head's bilinear form B = [W_q b_q]^T [W_k b_k] (scores are h~ B h~' / sqrt(qk) with
  h~ = [h, 1]), rank at most qk (its weights). Its activation matrix is R_q R_k^T from QR decompositions of the queries and
  keys on the data, whose singular values are the score matrix's. Its fold is B's truncated SVD split between
  queries and keys, with the queries scaled by sqrt(r / qk) so the 1 / sqrt(r) the narrower head applies
  leaves the scores as they were: exact at rank qk.
- per block "value-output": value units. Attention rows sum to one, so each value unit's output is its own
  weighted mean: the attended values (M, vo) are its activations, and an interpolative decomposition of them
  folds into the output matrix exactly as an MLP layer folds into the next (keep_units). Its weights: W_v.
- per block "feed-forward": the GELU units, measured and folded as an MLP layer's (keep_units into `down`); its
  weights: W_up.

Attention runs through torch's fused scaled_dot_product_attention with is_causal=True.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from rankprune.errors import ConfigError
from rankprune.models.base import Group, register, seeded
from rankprune.tasks import tokens  # noqa: F401  (the tokens it reads; re-exported)

__all__ = ["Transformer", "Block", "TransformerFamily", "tokens", "GROUPS_PER_BLOCK", "helmert"]

GROUPS_PER_BLOCK = ("query-key", "value-output", "feed-forward")
FF_RATIO = 4  # GPT-2's feed-forward width: 4 x the model width


class Block(nn.Module):
    """x + attention(LN(x)), then x + feed-forward(LN(x)); one head of query-key width `qk` and value width `vo`."""

    def __init__(self, width: int, qk: int, vo: int, ff: int):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.q, self.k = nn.Linear(width, qk), nn.Linear(width, qk)
        self.v, self.o = nn.Linear(width, vo), nn.Linear(vo, width)
        self.up, self.down = nn.Linear(width, ff), nn.Linear(ff, width)

    def attended(self, h: torch.Tensor) -> torch.Tensor:
        """(B, T, vo): each position's causal mean of the values, weighted by softmax(q k / sqrt(qk))."""
        q, k, v = self.q(h).unsqueeze(1), self.k(h).unsqueeze(1), self.v(h).unsqueeze(1)  # one head: (B, 1, T, .)
        return F.scaled_dot_product_attention(q, k, v, is_causal=True).squeeze(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.trace(x)[-1]

    def trace(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(attended values, feed-forward units, stream after attention, stream after the block)."""
        a = self.attended(self.ln1(x))
        mid = x + self.o(a)
        units = F.gelu(self.up(self.ln2(mid)))
        return a, units, mid, mid + self.down(units)


class Transformer(nn.Module):
    """(B, T, features) tokens -> (B, T, n_out) logits, position t predicting example t's label.

    widths: [residual, then per block query-key, value-output, feed-forward]."""

    family = "transformer"

    def __init__(self, input_shape: tuple[int, ...], widths: list[int], n_out: int):
        super().__init__()
        self.input_shape, self.widths, self.n_out = tuple(input_shape), list(widths), n_out
        positions, features = self.input_shape
        width, per_block = widths[0], widths[1:]
        self.embed = nn.Linear(features, width)
        self.position = nn.Parameter(torch.zeros(positions, width))
        nn.init.normal_(self.position, std=0.02)  # GPT-2's initialisation of learned positions
        self.blocks = nn.ModuleList(Block(width, *per_block[3 * b: 3 * b + 3]) for b in range(len(per_block) // 3))
        self.ln = nn.LayerNorm(width)
        self.read_out = nn.Linear(width, n_out)

    def _stream(self, x: torch.Tensor) -> torch.Tensor:
        length = x.shape[1]
        if length > self.position.shape[0]:
            raise ValueError(f"a sequence of {length} tokens is longer than the {self.position.shape[0]} positions")
        return self.embed(x) + self.position[:length]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._stream(x)
        for block in self.blocks:
            x = block(x)
        return self.read_out(self.ln(x))

    # --- what the controller measures -------------------------------------------------------------------------
    def _writers(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(weight (width, in), bias) of everything that writes to the residual stream; positions as a weight."""
        out = [(self.embed.weight, self.embed.bias), (self.position.T, None)]
        for b in self.blocks:
            out += [(b.o.weight, b.o.bias), (b.down.weight, b.down.bias)]
        return out

    def weights(self) -> list[torch.Tensor]:
        """Per group (module doc) the matrix whose rank drives it, then the read-out's weight: the residual's writers
        (centred) and the query-key bilinear form are made on the fly (no gradient); the value and feed-forward
        units' are their incoming weights, as an MLP layer's."""
        with torch.no_grad():
            centre = _centring(self.widths[0], self.embed.weight)
            out = [centre @ torch.cat([w for w, _ in self._writers()], dim=1)]
            forms = [_bilinear(b) for b in self.blocks]
        for form, b in zip(forms, self.blocks):
            out += [form, b.v.weight, b.up.weight]
        return [*out, self.read_out.weight]

    def hidden(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Per group its activation matrix (module doc): rows are sequences x positions (the residual's at every
        point a LayerNorm reads; the query-key's a (qk, qk) matrix with the score matrix's singular values)."""
        stream = self._stream(x)
        points, per_block = [stream], []
        for b in self.blocks:
            h = b.ln1(stream)
            a, units, mid, stream = b.trace(stream)
            points += [mid, stream]
            per_block += [_score_factor(b, h), a.reshape(-1, a.shape[-1]), units.reshape(-1, units.shape[-1])]
        residual = torch.cat([p.reshape(-1, p.shape[-1]) for p in points])
        return [residual - residual.mean(dim=1, keepdim=True), *per_block]

    @property
    def rows_per_sample(self) -> int:
        """Activation rows one sequence gives a group that has a row per position (models.base.activation_inputs)."""
        return self.input_shape[0]

    def group_readers(self, x: torch.Tensor, which: set[int]) -> dict[int, torch.Tensor]:
        """What reads each group, for the rebuild's cost (rebuild._layer_outputs): every group reaches the output
        through the residual stream, so a group's fold is costed on the logits."""
        logits = self(x)
        return {i: logits for i in which}

    # --- folds -------------------------------------------------------------------------------------------------
    def _units_group(self, g: int) -> tuple[Block, str, str]:
        """The block of unit group g and the names of its two matrices: the one whose rows are the units, and the
        one that reads them."""
        block, kind = self.blocks[(g - 1) // 3], GROUPS_PER_BLOCK[(g - 1) % 3]
        if kind == "value-output":
            return block, "v", "o"
        if kind == "feed-forward":
            return block, "up", "down"
        raise ValueError(f"group {g} ({kind}) is not folded unit by unit")

    @torch.no_grad()
    def keep_units(self, g: int, keep: torch.Tensor, fold: torch.Tensor) -> None:
        """Group g (value-output or feed-forward) keeps units `keep`; the matrix reading them becomes W fold^T."""
        block, first, second = self._units_group(g)
        this, after = getattr(block, first), getattr(block, second)
        keep = keep.to(this.weight.device)
        setattr(block, first, _linear(this.weight[keep], this.bias[keep]))
        setattr(block, second, _linear(after.weight @ fold.to(after.weight).T, after.bias))
        self.widths[g] = len(keep)

    @torch.no_grad()
    def fold_group(self, g: int, r: int, x: torch.Tensor) -> None:
        if g == 0:
            self._rotate_residual(r, x)
        else:
            self._fold_query_key(g, r)
        self.widths[g] = r

    def _fold_query_key(self, g: int, r: int) -> None:
        block = self.blocks[(g - 1) // 3]
        qk = block.q.out_features
        u, s, vh = torch.linalg.svd(_bilinear(block))
        root = s[:r].sqrt()
        query = root[:, None] * u[:, :r].T * math.sqrt(r / qk)
        key = root[:, None] * vh[:r]
        block.q = _linear(query[:, :-1], query[:, -1])
        block.k = _linear(key[:, :-1], key[:, -1])

    def _rotate_residual(self, r: int, x: torch.Tensor) -> None:
        width = self.widths[0]
        if r < 2:
            raise ValueError("a LayerNorm'd residual stream needs width 2 or more")
        # 1. LayerNorm gains and biases into the matrices that read them.
        for norm, readers in self._norms():
            for m in readers:
                m.bias.copy_(m.bias + m.weight @ norm.bias)
                m.weight.copy_(m.weight * norm.weight)
        # 2. Centre every writer: each reader is a LayerNorm, which never sees the stream's mean.
        centre = _centring(width, self.embed.weight)
        for w, b in self._writers():
            w.copy_(centre @ w)
            if b is not None:
                b.copy_(centre @ b)
        # 3. The stream's principal directions, within the mean-free ones.
        basis = helmert(width).to(self.embed.weight)  # (width, width - 1)
        z = self.hidden(x)[0] @ basis
        _, vectors = torch.linalg.eigh(z.T @ z)
        q = basis @ vectors.flip(1)[:, : r - 1]  # (width, r - 1)
        rotate = helmert(r).to(q) @ q.T  # (r, width): stream x -> rotate x, mean-free in r dims
        # 4. Rotate and cut. Writers write c rotate (...), c = sqrt(r / width), so that the stream's mean square per
        # feature, what LayerNorm divides by (with its eps), stays as it was; readers read (...) rotate^T / c.
        c = math.sqrt(r / width)
        write, read = c * rotate, rotate.T / c
        self.embed = _linear(write @ self.embed.weight, write @ self.embed.bias)
        self.position = nn.Parameter(self.position @ write.T)
        for b in self.blocks:
            b.o = _linear(write @ b.o.weight, write @ b.o.bias)
            b.down = _linear(write @ b.down.weight, write @ b.down.bias)
            for name in ("q", "k", "v", "up"):
                m = getattr(b, name)
                setattr(b, name, _linear(m.weight @ read, m.bias))
            b.ln1, b.ln2 = _norm(r, q), _norm(r, q)
        self.read_out = _linear(self.read_out.weight @ read, self.read_out.bias)
        self.ln = _norm(r, q)

    def _norms(self):
        for b in self.blocks:
            yield b.ln1, (b.q, b.k, b.v)
            yield b.ln2, (b.up,)
        yield self.ln, (self.read_out,)


def helmert(n: int) -> torch.Tensor:
    """(n, n - 1) orthonormal columns orthogonal to the all-ones vector (float64)."""
    h = torch.zeros(n, n - 1, dtype=torch.float64)
    for j in range(1, n):
        h[:j, j - 1] = 1.0 / math.sqrt(j * (j + 1))
        h[j, j - 1] = -j / math.sqrt(j * (j + 1))
    return h


def _centring(n: int, like: torch.Tensor) -> torch.Tensor:
    return torch.eye(n, dtype=like.dtype, device=like.device) - 1.0 / n


def _augmented(m: nn.Linear) -> torch.Tensor:
    return torch.cat([m.weight, m.bias[:, None]], dim=1)


def _bilinear(block: Block) -> torch.Tensor:
    """[W_q b_q]^T [W_k b_k]: (width + 1, width + 1), rank at most qk."""
    return _augmented(block.q).T @ _augmented(block.k)


def _score_factor(block: Block, h: torch.Tensor) -> torch.Tensor:
    """R_q R_k^T (qk, qk) from the reduced QR of all queries and keys on the data: the score matrix Q K^T is
    Q_q (R_q R_k^T) Q_k^T with orthonormal Q_q, Q_k, so both have the same singular values."""
    q, k = block.q(h).reshape(-1, block.q.out_features), block.k(h).reshape(-1, block.k.out_features)
    return torch.linalg.qr(q, mode="r")[1] @ torch.linalg.qr(k, mode="r")[1].T


def _linear(weight: torch.Tensor, bias: torch.Tensor) -> nn.Linear:
    out = nn.Linear(weight.shape[1], weight.shape[0], device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        out.weight.copy_(weight)
        out.bias.copy_(bias)
    return out


def _norm(width: int, like: torch.Tensor) -> nn.LayerNorm:
    """A LayerNorm of unit gain and zero bias (its old ones live in the matrices that read it)."""
    return nn.LayerNorm(width, device=like.device, dtype=like.dtype)


class TransformerFamily:
    name = "transformer"
    reads_sequences = True  # its data are sequences of one task's examples (config: --tasks, --sequence-length)
    default_sequence_length = 100  # the experiment's positions
    default_width = 32  # model width d; the experiment's grid ran d = 2^0 .. 2^9
    width_unit = "dimensions"
    # GPT-2 and the experiment train with Adam without decay of this size; the controller's SGD needs some decay
    # for ranks to fall, and the MLP's 5e-3 is the one the controller was built around.
    default_weight_decay = 5e-3
    # A feed-forward layer's incoming weights (4d x d) cannot have rank above d, so by weights every block would
    # shrink to d units at the first rebuild whatever it computes; its GELU outputs can span all 4d.
    default_rank_source = "activations"

    def groups(self, widths: list[int]) -> list[Group]:
        out = [Group("residual", fold="rotation", offset=1)]
        for b in range((len(widths) - 1) // 3):
            out += [Group(f"block {b + 1} query-key", fold="bilinear"), Group(f"block {b + 1} value-output"),
                    Group(f"block {b + 1} feed-forward")]
        return out

    def start_widths(self, width: int, depth: int) -> list[int]:
        return [width] + [width, width, FF_RATIO * width] * depth

    def depth_of(self, widths: list[int]) -> int:
        return (len(widths) - 1) // 3

    def check_input(self, input_shape: tuple[int, ...]) -> None:
        if len(input_shape) != 2:
            raise ConfigError("--model transformer reads sequences of examples of one task: give --tasks N (and "
                              "--sequence-length); these inputs are single samples of shape "
                              f"{tuple(input_shape)}")

    def build(self, input_shape, widths, n_out, seed, device="cpu") -> Transformer:
        self.check_input(tuple(input_shape))
        if len(widths) < 4 or (len(widths) - 1) % 3:
            raise ValueError(f"a transformer's widths are [residual, (query-key, value-output, feed-forward) per "
                             f"block], got {list(widths)}")
        return seeded(lambda: Transformer(tuple(input_shape), widths, n_out), seed, device)

    def parameter_count(self, input_shape, widths, n_out) -> int:
        positions, features = input_shape
        d, per_block = widths[0], widths[1:]
        total = features * d + d + positions * d + 2 * d + d * n_out + n_out
        for qk, vo, ff in zip(per_block[::3], per_block[1::3], per_block[2::3]):
            total += 4 * d + 2 * (d * qk + qk) + (d * vo + vo) + (vo * d + d) + (d * ff + ff) + (ff * d + d)
        return total

    def forward_flops(self, input_shape, widths, n_out) -> int:
        """One sequence: every matrix at every position, and the attention's scores and mixing as a dense kernel
        computes them (T x T, what torch's flop counter counts for scaled_dot_product_attention)."""
        positions, features = input_shape
        d, per_block = widths[0], widths[1:]
        per_token = features * d + d * n_out
        attention = 0
        for qk, vo, ff in zip(per_block[::3], per_block[1::3], per_block[2::3]):
            per_token += 2 * d * qk + d * vo + vo * d + 2 * d * ff
            attention += positions * positions * (qk + vo)
        return 2 * (positions * per_token + attention)

    def fan_in(self, input_shape, widths) -> list[int]:
        d, per_block = widths[0], widths[1:]
        # residual: nothing outside bounds the stream's rank but its own width (offset 1); query-key: the bilinear
        # form of a d-wide stream (and its bias); value-output and feed-forward: their incoming matrices' d columns
        return [d] + [bound for _ in range(len(per_block) // 3) for bound in (d + 1, d, d)]

    def activations_per_sample(self, input_shape, widths, n_out) -> int:
        positions, features = input_shape
        d, per_block = widths[0], widths[1:]
        per_token = features + d + n_out + sum(4 * d + qk * 2 + vo + 2 * ff for qk, vo, ff in
                                                zip(per_block[::3], per_block[1::3], per_block[2::3]))
        return positions * per_token + positions * positions * (len(per_block) // 3)  # the attention weights


register(TransformerFamily())

