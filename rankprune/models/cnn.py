"""The small convolutional family of the scaling experiments: conv blocks of a 3x3 convolution (padding 1)
and ReLU, 2x2 max-pooling after the first two blocks, global average pooling, then a linear classifier.
A hidden width is a block's channel count."""

from __future__ import annotations

import math

import torch
from torch import nn

from rankprune.errors import ConfigError
from rankprune.models.base import LayeredFamily, register, seeded

__all__ = ["CNN", "CNNFamily", "POOLED_BLOCKS", "KERNEL"]

KERNEL = 3
POOLED_BLOCKS = 2  # max-pooling (2x2) follows the first this many blocks


class CNN(nn.Module):
    family = "cnn"

    def __init__(self, input_shape: tuple[int, ...], widths: list[int], n_out: int):
        super().__init__()
        self.input_shape, self.widths, self.n_out = tuple(input_shape), list(widths), n_out
        channels = [self.input_shape[0], *widths]
        self.convs = nn.ModuleList(nn.Conv2d(a, b, KERNEL, padding=KERNEL // 2) for a, b in zip(channels[:-1], channels[1:]))
        self.classifier = nn.Linear(channels[-1], n_out)

    def _blocks(self, x: torch.Tensor):
        """Each block's output as the next layer reads it: post-ReLU, and pooled where a pool follows."""
        for i, conv in enumerate(self.convs):
            x = torch.relu(conv(x))
            if i < POOLED_BLOCKS:
                x = nn.functional.max_pool2d(x, 2)
            yield x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for x in self._blocks(x):
            pass
        return self.classifier(x.mean(dim=(2, 3)))  # global average pooling

    def hidden(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Per block, the (N*H*W, C) matrix of the channel activations the next layer reads: post-ReLU, after
        the block's max-pool where it has one. Pooling acts on each channel alone, so keeping channels S of
        the pooled map is pooling the kept channels: a decomposition of this matrix folds exactly into the
        next convolution (or, through the global average, into the classifier)."""
        return [z.permute(0, 2, 3, 1).reshape(-1, z.shape[1]) for z in self._blocks(x)]

    def weights(self) -> list[torch.Tensor]:
        return [conv.weight for conv in self.convs] + [self.classifier.weight]

    def layer_parameters(self) -> list[tuple[nn.Parameter, nn.Parameter]]:
        """(weight, bias) of every block, then the classifier's: what a batch (models.batched) stacks."""
        return [(conv.weight, conv.bias) for conv in self.convs] + [(self.classifier.weight, self.classifier.bias)]

    @torch.no_grad()
    def keep_units(self, layer: int, keep: torch.Tensor, fold: torch.Tensor) -> None:
        """Block `layer` keeps output channels `keep`; the next convolution (or the classifier) reads them
        through `fold` (r x channels): W'[o, s] = sum_c W[o, c] fold[s, c] at every kernel position."""
        conv = self.convs[layer]
        keep = keep.to(conv.weight.device)
        self.convs[layer] = _conv(conv.weight[keep], conv.bias[keep])
        if layer + 1 < len(self.convs):
            after = self.convs[layer + 1]
            w = torch.einsum("ocij,sc->osij", after.weight, fold.to(after.weight))
            self.convs[layer + 1] = _conv(w, after.bias)
        else:
            w = self.classifier.weight @ fold.to(self.classifier.weight).T
            new = nn.Linear(w.shape[1], w.shape[0], device=w.device, dtype=w.dtype)
            new.weight.copy_(w)
            new.bias.copy_(self.classifier.bias)
            self.classifier = new
        self.widths[layer] = len(keep)


def _conv(weight: torch.Tensor, bias: torch.Tensor) -> nn.Conv2d:
    out = nn.Conv2d(weight.shape[1], weight.shape[0], weight.shape[2], padding=weight.shape[2] // 2,
                    device=weight.device, dtype=weight.dtype)
    out.weight.copy_(weight)
    out.bias.copy_(bias)
    return out


def _resolutions(input_shape: tuple[int, ...], depth: int) -> list[int]:
    """Pixels (H*W) each block's convolution runs over."""
    _c, h, w = input_shape
    out = []
    for i in range(depth):
        out.append(h * w)
        if i < POOLED_BLOCKS:
            h, w = h // 2, w // 2
    return out


class CNNFamily(LayeredFamily):
    name = "cnn"
    layer_word = "block"
    default_width = 64  # channels per block
    width_unit = "channels"
    # At the MLP's 5e-3 this network underfits the MNIST subset (88% training accuracy, depth 2); 1e-3 lets it
    # fit while its second block's rank still falls (64 -> 46 channels at depth 2, benchmarks/results/evolve_cnn_mnist10k.md).
    default_weight_decay = 1e-3
    # A block's incoming (out, in*3*3) matrix cannot have rank above in*9: the first block's is capped at 9 by a
    # grey-scale image, where its post-ReLU outputs span 22-29 directions; cut to the weights' 7-8 channels, each
    # warm rebuild lost 5-7% of the next layer's pre-activations, against 1-2% driven by the activations, at test
    # accuracy within noise (MNIST subset, depths 2-3, 3 seeds: benchmarks/results/rank_source.md).
    default_rank_source = "activations"

    def batched(self, members: list[CNN]):
        """K members trained as one model (models.batched): grouped convolutions."""
        from rankprune.models.batched import BatchedCNN

        return BatchedCNN(members)

    def check_input(self, input_shape: tuple[int, ...]) -> None:
        if len(input_shape) != 3:
            raise ConfigError(f"--model cnn needs images (channels, height, width); these inputs have shape "
                              f"{tuple(input_shape)}: use --model mlp")
        if min(input_shape[1:]) < 2**POOLED_BLOCKS:
            raise ConfigError(f"--model cnn pools twice, so images need at least {2**POOLED_BLOCKS}x{2**POOLED_BLOCKS} "
                              f"pixels; these are {input_shape[1]}x{input_shape[2]}")

    def build(self, input_shape, widths, n_out, seed, device="cpu") -> CNN:
        self.check_input(tuple(input_shape))
        return seeded(lambda: CNN(tuple(input_shape), widths, n_out), seed, device)

    def parameter_count(self, input_shape, widths, n_out) -> int:
        channels = [input_shape[0], *widths]
        convs = sum(a * b * KERNEL * KERNEL + b for a, b in zip(channels[:-1], channels[1:]))
        return convs + channels[-1] * n_out + n_out

    def forward_flops(self, input_shape, widths, n_out) -> int:
        channels = [input_shape[0], *widths]
        pixels = _resolutions(tuple(input_shape), len(widths))
        convs = sum(2 * a * b * KERNEL * KERNEL * p for a, b, p in zip(channels[:-1], channels[1:], pixels))
        return convs + 2 * channels[-1] * n_out

    def fan_in(self, input_shape, widths) -> list[int]:
        # a block's weight (out, in, 3, 3) is measured as the (out, in * 9) matrix
        return [c * KERNEL * KERNEL for c in [input_shape[0], *widths[:-1]]]

    def activations_per_sample(self, input_shape, widths, n_out) -> int:
        # every block's output at its convolution's resolution (before pooling), which bounds what pooling keeps
        pixels = _resolutions(tuple(input_shape), len(widths))
        return math.prod(input_shape) + sum(w * p for w, p in zip(widths, pixels)) + n_out


register(CNNFamily())
