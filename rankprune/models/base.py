"""The model-family seam: what every family of networks provides, and the registry of families.

A family builds a network from a list of widths, one per *group of units* (family.groups names them: an MLP
layer's units, a conv block's channels; a transformer block's feed-forward units, its head's query-key and
value-output dimensions, and the residual width its blocks share) and knows its parameter and FLOP counts in
closed form. Its networks expose what the controller measures and rebuilds, so nothing outside a family's module
knows its layers:

    network.weights()            per group, the matrix whose rank drives its width, then the output layer's
                                 weight; the controller measures each as w.reshape(w.shape[0], -1) (a conv
                                 weight (out, in, k, k) as (out, in*k*k), as WeightWatcher and Torch-Pruning
                                 do). For an MLP or CNN these are the hidden layers' incoming weights.
    network.hidden(x)            per group, the activation matrix whose rank drives its width under
                                 --rank-source activations: (M, width), rows samples (and positions)
    network.keep_units(g, S, T)  for a group whose fold is "units": keep units S of group g and fold the
                                 dropped ones into what reads them through T (r x width), so that the reader
                                 sees hidden[:, S] @ T (the interpolative decomposition of rebuild.py)
    network.fold_group(g, r, x)  for a group with its own fold ("bilinear", "rotation"): shrink it to r,
                                 keeping the function as nearly as its fold can on inputs x

FAMILIES is the only list of family names.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from rankprune.errors import ConfigError

__all__ = ["Group", "LayeredFamily", "Family", "Network", "FAMILIES", "register", "get_family", "family_of", "width_for_parameters",
           "activation_rows", "activation_inputs", "MAX_ACTIVATION_ROWS"]

# A conv layer's activation matrix has a row per sample and position (4,096 images of 28x28: 3.2 million
# rows); its decompositions need far fewer rows than that to see every channel's direction.
MAX_ACTIVATION_ROWS = 32_768


@dataclass(frozen=True)
class Group:
    """A named group of units whose count is one entry of a network's widths.

    fold: how the warm rebuild shrinks it: "units" keeps the units an interpolative decomposition of its
    activations picks and folds the rest into what reads them (network.keep_units); any other name is the
    network's own fold (network.fold_group), for a group whose units are not read one by one (a bilinear form, a
    rotated residual stream).
    offset: directions a width of w carries are w - offset: a LayerNorm'd residual stream of width w spans at most
    w - 1 directions (the norm removes the mean of its features), so a stream of rank r needs width r + 1."""

    name: str
    fold: str = "units"
    offset: int = 0


class LayeredFamily:
    """The groups of a family whose widths are its hidden layers' (the MLP's units, the CNN's channels): one group per
    layer, folded unit by unit, every layer starting at the same width."""

    layer_word = "layer"  # how a group is named: "layer 2", "block 2"

    def groups(self, widths: list[int]) -> list[Group]:
        return [Group(f"{self.layer_word} {i + 1}") for i in range(len(widths))]

    def start_widths(self, width: int, depth: int) -> list[int]:
        return [width] * depth

    def depth_of(self, widths: list[int]) -> int:
        return len(widths)


@runtime_checkable
class Network(Protocol):
    family: str
    input_shape: tuple[int, ...]
    widths: list[int]
    n_out: int

    def weights(self) -> list[torch.Tensor]: ...
    def hidden(self, x: torch.Tensor) -> list[torch.Tensor]: ...
    def keep_units(self, layer: int, keep: torch.Tensor, fold: torch.Tensor) -> None: ...


class Family(Protocol):
    name: str
    default_width: int
    default_weight_decay: float  # what --weight-decay means when it is not given
    default_rank_source: str  # what --rank-source means when it is not given: "weights" | "activations"
    width_unit: str  # what a width counts, for labels: "units", "channels"

    def check_input(self, input_shape: tuple[int, ...]) -> None:
        """ConfigError (one line) when this family cannot take inputs of this shape."""

    def groups(self, widths: list[int]) -> list[Group]:
        """What each entry of `widths` counts, in order: the groups the controller measures and rebuilds."""

    def start_widths(self, width: int, depth: int) -> list[int]:
        """The widths a network of `depth` (hidden layers, or blocks) starts from at `width`: [width] * depth for an
        MLP or CNN; a transformer's residual width, then each block's query-key, value-output and feed-forward."""

    def depth_of(self, widths: list[int]) -> int:
        """The depth whose start_widths have as many entries as `widths`."""

    def build(self, input_shape: tuple[int, ...], widths: list[int], n_out: int, seed: int,
              device: str | torch.device = "cpu") -> nn.Module: ...

    def parameter_count(self, input_shape: tuple[int, ...], widths: list[int], n_out: int) -> int: ...

    def forward_flops(self, input_shape: tuple[int, ...], widths: list[int], n_out: int) -> int:
        """FLOPs of one sample's forward pass: 2 per multiply-add (biases, activations, pooling ignored)."""

    def fan_in(self, input_shape: tuple[int, ...], widths: list[int]) -> list[int]:
        """Per hidden layer, the columns of its incoming weight matrix as the controller measures it: the most rank
        that matrix can have whatever the width, a bound set by the layer's input (the first layer's by the data:
        64 pixels of digits; 9 for a grey-scale conv block's 3x3 kernel)."""

    def activations_per_sample(self, input_shape: tuple[int, ...], widths: list[int], n_out: int) -> int:
        """Values one sample's forward pass holds for the backward pass: the input, every hidden layer's output
        (a conv block's at each position) and the logits. For memory estimates (sizing.py)."""


FAMILIES: dict[str, Family] = {}


def register(family: Family) -> Family:
    FAMILIES[family.name] = family
    return family


def get_family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise ConfigError(f"unknown model family {name!r}; choose from {', '.join(FAMILIES)}") from None


def family_of(network: nn.Module) -> Family:
    return get_family(network.family)


def seeded(make, seed: int, device) -> nn.Module:
    """Build with torch's default initialisation under `seed`, forking the global RNG so that building a
    network never shifts the stream of anything else."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = make()
    return model.to(device)


def width_for_parameters(family: Family, input_shape: tuple[int, ...], depth: int, n_out: int, params: int) -> int:
    """The width h (start_widths(h, depth): equal for every hidden layer) whose network has the parameter count nearest `params`,
    as the jamming experiments match networks of different depths (Geiger et al. 2019). Counts grow with h,
    so a bisection finds it for any family; for an MLP it agrees with the root of
    N = h*d + (L-1)*h^2 + n*h (+ biases)."""
    if params < 1:
        raise ConfigError(f"--params must be at least 1, got {params}")
    count = lambda h: family.parameter_count(input_shape, family.start_widths(h, depth), n_out)  # noqa: E731
    if params < count(1):  # nothing that small exists: say so rather than start a larger network silently
        raise ConfigError(f"--params {params:,} is below the smallest {family.name} of depth {depth} on these inputs "
                          f"({count(1):,} parameters at width 1)")
    lo, hi = 1, 1
    while count(hi) < params:
        lo, hi = hi, hi * 2
        if hi > 2**31:
            raise ConfigError(f"--params {params} is beyond any width")
    while lo < hi:  # smallest h with count(h) >= params
        mid = (lo + hi) // 2
        if count(mid) >= params:
            hi = mid
        else:
            lo = mid + 1
    best = min((h for h in (lo - 1, lo) if h >= 1), key=lambda h: (abs(count(h) - params), h))
    if not math.isfinite(count(best)):
        raise ConfigError(f"--params {params}: no width fits")
    return best


def activation_rows(z: torch.Tensor, limit: int = MAX_ACTIVATION_ROWS) -> torch.Tensor:
    """At most `limit` rows of an activation matrix, evenly strided (deterministic, and spread over samples
    and positions alike); an MLP's matrix of at most `limit` samples is returned whole."""
    step = -(-z.shape[0] // limit)
    return z if step <= 1 else z[::step]


@torch.no_grad()
def activation_inputs(model: nn.Module, x: torch.Tensor, limit: int = MAX_ACTIVATION_ROWS) -> torch.Tensor:
    """The first inputs of `x` that give every hidden layer at least `limit` activation rows (all of them when
    fewer do). A conv layer yields a row per position, so a few hundred images fill it: passing 4,096
    images through a CNN in float64 for rows that activation_rows then drops cost most of a warm rebuild."""
    per_sample = getattr(model, "rows_per_sample", None) or (min(z.shape[0] for z in model.hidden(x[:1])) if len(x) else 1)
    return x[: -(-limit // max(per_sample, 1))]
