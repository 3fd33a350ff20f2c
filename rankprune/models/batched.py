"""K networks of one family and depth trained as one model: every layer's weights stacked as (K, out, in, ...)
and padded to the widest member, so that one batched forward and backward per step trains them all.

Each member stays a plain network of its family (its own widths, its own nn.Module): while it is bound into a
batch its parameters are views of its block of the stacked tensors, so whatever reads the member (evaluation,
the probes, the warm rebuild, state_dict) sees the live weights, and `release` gives it storage of its own
again. A member narrower than the widest has zero padding in its block and a unit mask that zeroes its padded
hidden units' outputs in the forward pass, so those units get no gradient, no weight decay (zero stays zero)
and never appear in anything measured on the member, which sees only its own block.

The optimiser is SGD with per-member learning rate, momentum and weight decay, written out on the stacked
tensors (torch.optim.SGD's update: d = g + wd * p; buf = momentum * buf + d; p -= lr * buf, with the buffer
starting at zero, which is torch's first step). Memory grows as K x the widest member's parameters, three
times over (weights, gradients, momentum), plus K x batch x the widest layer for activations.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

__all__ = ["BatchedNetwork", "BatchedMLP", "BatchedCNN"]


class BatchedNetwork(nn.Module):
    """The stacked parameters of K members and their SGD state; a family's subclass gives `forward(x)`, x of
    shape (K, B, *input_shape), returning (K, B, n_out). With `transposed`, 2-D weights are stacked as
    (K, in, out), so that the batched matmul and its weight gradient need no transposed copies."""

    transposed = False

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        if not members:
            raise ValueError("a batch needs at least one member")
        first = members[0]
        if any(type(m) is not type(first) or len(m.widths) != len(first.widths) or m.n_out != first.n_out
               or tuple(m.input_shape) != tuple(first.input_shape) for m in members):
            raise ValueError("a batch holds members of one family, depth, input shape and output size")
        self.members = list(members)
        self.input_shape, self.n_out = tuple(first.input_shape), first.n_out
        self.widths = [max(m.widths[i] for m in members) for i in range(len(first.widths))]
        pairs = [m.layer_parameters() for m in members]  # (weight, bias) per layer, output layer last
        weights, biases = [], []
        for layer in range(len(pairs[0])):
            w_shape = tuple(max(self._stored(p[layer][0]).shape[d] for p in pairs) for d in range(pairs[0][layer][0].dim()))
            b_shape = (max(p[layer][1].shape[0] for p in pairs),)
            w = pairs[0][layer][0].new_zeros((len(members), *w_shape))
            b = pairs[0][layer][1].new_zeros((len(members), *b_shape))
            with torch.no_grad():
                for k, p in enumerate(pairs):
                    stored = self._stored(p[layer][0])
                    w[k][_block(stored.shape)].copy_(stored)
                    b[k][: p[layer][1].shape[0]].copy_(p[layer][1])
            weights.append(nn.Parameter(w))
            biases.append(nn.Parameter(b))
        self.weights, self.biases = nn.ParameterList(weights), nn.ParameterList(biases)
        device, dtype = weights[0].device, weights[0].dtype
        # Per hidden layer, (K, width) with 1 for a member's real units and 0 for its padding; None where every
        # member has the full width (no multiply needed).
        self.masks: list[torch.Tensor | None] = []
        for i, width in enumerate(self.widths):
            mine = torch.tensor([m.widths[i] for m in members], device=device)
            self.masks.append(None if bool((mine == width).all()) else
                              (torch.arange(width, device=device)[None, :] < mine[:, None]).to(dtype))
        self.momentum_buffers = [torch.zeros_like(p) for p in self.parameters()]
        self._bind()

    def _stored(self, weight: torch.Tensor) -> torch.Tensor:
        """A member's weight as the stack holds it."""
        return weight.t() if self.transposed and weight.dim() == 2 else weight

    def _bind(self) -> None:
        """Point every member's parameters at its block of the stacked tensors."""
        for k, member in enumerate(self.members):
            for layer, (weight, bias) in enumerate(member.layer_parameters()):
                block = self.weights[layer].data[k][_block(self._stored(weight).shape)]
                weight.data = self._stored(block)  # a transposed view of a transposed block is the (out, in) weight
                bias.data = self.biases[layer].data[k][: bias.shape[0]]

    def release(self, indices: list[int] | None = None) -> None:
        """Give the members at `indices` (default: all) storage of their own, holding their weights now."""
        for k in range(len(self.members)) if indices is None else indices:
            for weight, bias in self.members[k].layer_parameters():
                weight.data = weight.data.clone(memory_format=torch.contiguous_format)
                bias.data = bias.data.clone(memory_format=torch.contiguous_format)
                weight.grad = bias.grad = None

    @torch.no_grad()
    def select(self, indices: list[int]) -> "BatchedNetwork":
        """A batch of the members at `indices` only, with their weights and momentum; call release() on the
        others first. Fewer members, less work per step: a member that has saturated leaves the batch."""
        out = type(self).__new__(type(self))
        nn.Module.__init__(out)
        idx = torch.tensor(indices, device=self.weights[0].device)
        out.members = [self.members[k] for k in indices]
        out.input_shape, out.n_out = self.input_shape, self.n_out
        # Keep the padding as it is (a member's block and its neighbours' shapes do not change within a batch).
        out.weights = nn.ParameterList(nn.Parameter(p.index_select(0, idx)) for p in self.weights)
        out.biases = nn.ParameterList(nn.Parameter(p.index_select(0, idx)) for p in self.biases)
        out.widths = list(self.widths)
        out.masks = [None if m is None else m.index_select(0, idx) for m in self.masks]
        out.momentum_buffers = [b.index_select(0, idx) for b in self.momentum_buffers]
        out._bind()
        return out

    @torch.no_grad()
    def singular_values(self) -> list[list[np.ndarray] | None]:
        """Per member, the singular values of each of its weight matrices (as measure.measure_layers takes
        them: a conv weight as (out, in*k*k)), descending, from one batched float64 Gram eigendecomposition per
        layer on the training device: the zero padding adds only zeros, so a member's block keeps its own
        values, the top min(out, in) of the padded matrix's. They agree with a float32 SVD of the member's
        matrix to that SVD's own error (2.6e-7 x the largest, measured on a 160 x 784 matrix whose
        spectrum spans 6 decades); 8 members' 160 x 784 layers took 4.7x less time than their SVDs one by
        one on CPU. None for a member whose weights are not finite (its own SVD reports NaN)."""
        out: list[list[np.ndarray] | None] = [[] for _ in self.members]
        shapes = [[tuple(w.reshape(w.shape[0], -1).shape) for w in m.weights()] for m in self.members]
        for layer, w in enumerate(self.weights):
            m = w.detach().reshape(w.shape[0], w.shape[1], -1).double()
            finite = torch.isfinite(m).flatten(1).all(1)
            m = torch.where(finite[:, None, None], m, torch.zeros((), dtype=m.dtype, device=m.device))
            gram = m @ m.transpose(1, 2) if m.shape[1] <= m.shape[2] else m.transpose(1, 2) @ m
            values = torch.linalg.eigvalsh(gram).flip(-1).clamp_min(0).sqrt().cpu().numpy()
            for k, ok in enumerate(finite.tolist()):
                if out[k] is None:
                    continue
                if not ok:
                    out[k] = None
                    continue
                out[k].append(values[k, : min(shapes[k][layer])].copy())
        return out

    @torch.no_grad()
    def sgd_step(self, lr: torch.Tensor, momentum: torch.Tensor, weight_decay: torch.Tensor) -> None:
        """One SGD step of every member with its own lr, momentum and weight decay ((K,) tensors)."""
        for p, buf in zip(self.parameters(), self.momentum_buffers):
            shape = (-1,) + (1,) * (p.dim() - 1)
            d = p.grad.addcmul_(p, weight_decay.view(shape))  # the gradient is fresh every step: updated in place
            buf.mul_(momentum.view(shape)).add_(d)
            p.addcmul_(buf, lr.view(shape), value=-1.0)

    def zero_grad(self, set_to_none: bool = True) -> None:  # noqa: D102 (nn.Module's)
        super().zero_grad(set_to_none=set_to_none)


def _block(shape: torch.Size | tuple[int, ...]) -> tuple[slice, ...]:
    """The leading block of a padded tensor that holds a member's tensor of `shape`."""
    return tuple(slice(0, n) for n in shape)


class BatchedMLP(BatchedNetwork):
    """K MLPs: per layer one batched matmul, (K, B, in) x (K, in, out) + (K, 1, out)."""

    transposed = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.flatten(2)  # (K, B, *input_shape) -> (K, B, n_in)
        last = len(self.weights) - 1
        for layer, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = torch.baddbmm(b.unsqueeze(1), h, w)
            if layer < last:
                h = torch.relu(h)
                if self.masks[layer] is not None:
                    h = h * self.masks[layer].unsqueeze(1)
        return h


class BatchedCNN(BatchedNetwork):
    """K CNNs: every block one grouped convolution (groups = K) over the members' channels side by side, then
    one batched matmul for the classifiers."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from rankprune.models.cnn import KERNEL, POOLED_BLOCKS

        k, b = x.shape[:2]
        h = x.transpose(0, 1).reshape(b, k * x.shape[2], *x.shape[3:])  # (B, K*C, H, W): member k's channels in group k
        last = len(self.weights) - 1
        for layer in range(last):
            w, bias = self.weights[layer], self.biases[layer]
            h = torch.relu(nn.functional.conv2d(h, w.flatten(0, 1), bias.flatten(), padding=KERNEL // 2, groups=k))
            if self.masks[layer] is not None:
                h = h * self.masks[layer].flatten()[None, :, None, None]
            if layer < POOLED_BLOCKS:
                h = nn.functional.max_pool2d(h, 2)
        pooled = h.mean(dim=(2, 3)).view(b, k, -1).transpose(0, 1)  # global average pooling, (K, B, channels)
        return torch.baddbmm(self.biases[last].unsqueeze(1), pooled, self.weights[last].transpose(1, 2))
