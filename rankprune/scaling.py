"""Output scaling for the lazy-training experiments (Chizat, Oyallon and Bach 2019): the network's output is
alpha * (f(x) - f_0(x)), f_0 a frozen copy of the network where its training started, so the scaled model
starts at exactly zero output; the learning rate is divided by alpha^2 (the controller does that). Large alpha
is the lazy regime: the weights barely move while the output still fits.

Done with a forward hook, so every family, every measurement of the weights and every evaluation sees the
same network; f_0 is kept outside the module's parameters and state_dict (it is the iteration's starting
weights, which the run folder saves anyway as ...-start.pt).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["center_and_scale", "scale_of", "plain", "lazy_decay_warning"]

_HOOK, _START, _ALPHA = "_rankprune_scale_hook", "_rankprune_start", "_rankprune_alpha"


def center_and_scale(model: nn.Module, alpha: float, start: nn.Module | None = None) -> nn.Module:
    """Make `model` compute alpha * (model(x) - start(x)); `start` defaults to a frozen copy of the model as it is
    now. A model already scaled is re-centred (its previous hook removed first). Returns the model."""
    _unscale(model)
    f0 = copy.deepcopy(start if start is not None else model)
    _unscale(f0)  # the reference is the plain network
    f0.requires_grad_(False).eval()

    def scaled(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        x = inputs[0]
        with torch.no_grad():
            ref = f0(x.to(next(f0.parameters()).dtype)).to(output.dtype)
        return alpha * (output - ref)

    scaled._rankprune_scale = True  # found by _unscale in copies too (a deep copy's handle points at the original)
    # Plain attributes, not submodules: f_0 must not appear in parameters(), state_dict() or the weight spectra.
    model.__dict__[_START], model.__dict__[_ALPHA] = f0, alpha
    model.__dict__[_HOOK] = model.register_forward_hook(scaled)
    return model


def _unscale(model: nn.Module) -> None:
    """Remove an output scaling hook this module installed, from the module itself (not through a handle)."""
    for key, fn in list(model._forward_hooks.items()):
        if getattr(fn, "_rankprune_scale", False):
            del model._forward_hooks[key]
    for key in (_HOOK, _START, _ALPHA):
        model.__dict__.pop(key, None)


def plain(model: nn.Module) -> nn.Module:
    """The model without an output scaling this module installed (removed in place): the network f itself.
    Returns the model."""
    _unscale(model)
    return model


def scale_of(model: nn.Module) -> float | None:
    """The alpha a model is scaled by, or None for a plain network."""
    return model.__dict__.get(_ALPHA)


def lazy_decay_warning(cfg) -> str | None:
    """A one-line warning when --alpha runs with weight decay: decay pulls every weight towards zero, away from the
    initialisation the lazy regime stays near, and the controller divides the learning rate by alpha^2 but not the
    decay, so at large alpha the decay dominates the (tiny) gradient steps. Chizat et al. train without it."""
    alpha, decay = cfg.model.alpha, cfg.train.weight_decay
    if alpha is None or decay == 0:
        return None
    shown = "the default weight decay" if decay is None else f"weight decay {decay:g}"
    return (f"--alpha {alpha:g} with {shown}: the decay pulls the weights towards zero, away from "
            "their initialisation, so the lazy regime does not survive it; give --weight-decay 0 (as Chizat et al. "
            "train), or use `rankprune dynamics lazy --decay-to-init` for a decay towards the initial weights")
