"""Networks built from a list of hidden widths. No training code here."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["MLP", "build_mlp", "parameter_count", "forward_flops"]


class MLP(nn.Module):
    """input -> hidden widths with ReLU -> classes (logits)."""

    def __init__(self, n_in: int, widths: list[int], n_out: int):
        super().__init__()
        self.n_in, self.widths, self.n_out = n_in, list(widths), n_out
        dims = [n_in, *widths, n_out]
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for linear in self.linears[:-1]:
            x = torch.relu(linear(x))
        return self.linears[-1](x)

    def hidden(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Post-activation outputs of every hidden layer, (N, width_l) each."""
        outs = []
        for linear in self.linears[:-1]:
            x = torch.relu(linear(x))
            outs.append(x)
        return outs


def build_mlp(n_in: int, widths: list[int], n_out: int, seed: int, device: str | torch.device = "cpu") -> MLP:
    """A freshly initialised MLP (PyTorch's default Kaiming-uniform init), the same for a given seed.

    The global RNG is forked so that building a network never shifts the stream of anything else.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MLP(n_in, widths, n_out)
    return model.to(device)


def parameter_count(n_in: int, widths: list[int], n_out: int) -> int:
    dims = [n_in, *widths, n_out]
    return sum(a * b + b for a, b in zip(dims[:-1], dims[1:]))


def forward_flops(n_in: int, widths: list[int], n_out: int) -> int:
    """FLOPs of one sample's forward pass: 2 per multiply-add of every weight (biases and ReLU ignored).

    A training step costs about 3x this per sample (forward, and backward for inputs and weights).
    """
    dims = [n_in, *widths, n_out]
    return 2 * sum(a * b for a, b in zip(dims[:-1], dims[1:]))
