"""The multilayer perceptron family: input (flattened) -> hidden widths with ReLU -> class logits."""

from __future__ import annotations

import math

import torch
from torch import nn

from rankprune.models.base import LayeredFamily, register, seeded

__all__ = ["MLP", "MLPFamily", "build_mlp", "parameter_count", "forward_flops"]


def _n_in(input_shape: int | tuple[int, ...]) -> int:
    return input_shape if isinstance(input_shape, int) else math.prod(input_shape)


class MLP(nn.Module):
    """input -> hidden widths with ReLU -> classes (logits). Inputs of any shape (N, ...) are flattened."""

    family = "mlp"

    def __init__(self, input_shape: int | tuple[int, ...], widths: list[int], n_out: int):
        super().__init__()
        self.input_shape = (input_shape,) if isinstance(input_shape, int) else tuple(input_shape)
        self.n_in, self.widths, self.n_out = _n_in(input_shape), list(widths), n_out
        dims = [self.n_in, *widths, n_out]
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)  # a view: images (N, C, H, W) become (N, C*H*W)
        for linear in self.linears[:-1]:
            x = torch.relu(linear(x))
        return self.linears[-1](x)

    def hidden(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Post-activation outputs of every hidden layer, (N, width_l) each."""
        x = x.flatten(1)
        outs = []
        for linear in self.linears[:-1]:
            x = torch.relu(linear(x))
            outs.append(x)
        return outs

    def weights(self) -> list[torch.Tensor]:
        return [linear.weight for linear in self.linears]

    def layer_parameters(self) -> list[tuple[nn.Parameter, nn.Parameter]]:
        """(weight, bias) of every layer, hidden layers first: what a batch (models.batched) stacks."""
        return [(linear.weight, linear.bias) for linear in self.linears]

    @torch.no_grad()
    def keep_units(self, layer: int, keep: torch.Tensor, fold: torch.Tensor) -> None:
        """Hidden layer `layer` keeps the units `keep` (rows of its weights and biases); the next layer's
        weights become W_{l+1} fold^T, so it reads the kept units through `fold` (r x width)."""
        this, after = self.linears[layer], self.linears[layer + 1]
        keep = keep.to(this.weight.device)
        fold = fold.to(after.weight)
        self.linears[layer] = _linear(this.weight[keep], this.bias[keep])
        self.linears[layer + 1] = _linear(after.weight @ fold.T, after.bias)
        self.widths[layer] = len(keep)


def _linear(weight: torch.Tensor, bias: torch.Tensor) -> nn.Linear:
    out = nn.Linear(weight.shape[1], weight.shape[0], device=weight.device, dtype=weight.dtype)
    out.weight.copy_(weight)
    out.bias.copy_(bias)
    return out


class MLPFamily(LayeredFamily):
    name = "mlp"
    default_width = 784  # the original experiment's width: MNIST's input size
    width_unit = "units"
    default_weight_decay = 5e-3  # the original experiment's
    # The original experiment's. Activations gave 25-26% narrower MLPs at test accuracy within noise but validation
    # accuracy 0.4-0.9 points lower at depth 2 in every seed (benchmarks/results/rank_source.md): not enough to
    # change what the MLP's convergent rank has meant.
    default_rank_source = "weights"

    def batched(self, members: list[MLP]):
        """K members trained as one model (models.batched)."""
        from rankprune.models.batched import BatchedMLP

        return BatchedMLP(members)

    def check_input(self, input_shape: tuple[int, ...]) -> None:
        pass  # any input flattens

    def build(self, input_shape, widths, n_out, seed, device="cpu") -> MLP:
        return seeded(lambda: MLP(tuple(input_shape), widths, n_out), seed, device)

    def parameter_count(self, input_shape, widths, n_out) -> int:
        dims = [_n_in(input_shape), *widths, n_out]
        return sum(a * b + b for a, b in zip(dims[:-1], dims[1:]))

    def forward_flops(self, input_shape, widths, n_out) -> int:
        dims = [_n_in(input_shape), *widths, n_out]
        return 2 * sum(a * b for a, b in zip(dims[:-1], dims[1:]))

    def activations_per_sample(self, input_shape, widths, n_out) -> int:
        return _n_in(input_shape) + sum(widths) + n_out

    def fan_in(self, input_shape, widths) -> list[int]:
        return [_n_in(input_shape), *widths[:-1]]


MLP_FAMILY = register(MLPFamily())


def build_mlp(input_shape: int | tuple[int, ...], widths: list[int], n_out: int, seed: int,
              device: str | torch.device = "cpu") -> MLP:
    """A freshly initialised MLP (PyTorch's default Kaiming-uniform init), the same for a given seed."""
    return seeded(lambda: MLP(input_shape, widths, n_out), seed, device)


def parameter_count(input_shape: int | tuple[int, ...], widths: list[int], n_out: int) -> int:
    return MLP_FAMILY.parameter_count(input_shape, widths, n_out)


def forward_flops(input_shape: int | tuple[int, ...], widths: list[int], n_out: int) -> int:
    """FLOPs of one sample's forward pass: 2 per multiply-add of every weight (biases and ReLU ignored).

    A training step costs about 3x this per sample (forward, and backward for inputs and weights).
    """
    return MLP_FAMILY.forward_flops(input_shape, widths, n_out)
