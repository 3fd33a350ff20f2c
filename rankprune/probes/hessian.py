"""The Hessian of the training loss at the end of every iteration (--hessian-top K): its top K eigenvalues by
Lanczos (scipy's eigsh on a LinearOperator of Hessian-vector products, taken by double backward), and for
networks of at most --hessian-full-max parameters the whole spectrum, which the jamming experiments draw as
a density of sqrt(lambda). Taken in float64 on a seeded, fixed batch of --hessian-samples training rows, on
a copy of the network, so training is untouched.

The iteration's row gets hessian_top (K eigenvalues, largest first), hessian_parameters and
hessian_samples; hessian.jsonl gets one row per iteration with the eigenvalues (all of them where the full
spectrum was taken).
"""

from __future__ import annotations

import copy
from typing import Callable

import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator, eigsh
from torch import nn

from rankprune.errors import ConfigError
from rankprune.losses import per_sample
from rankprune.probes.base import ProbeContext, register
from rankprune.runfolder import HESSIAN
from rankprune.seeds import HESSIAN_ROWS, derive_seed

__all__ = ["HessianProbe", "hessian_operator", "top_eigenvalues", "full_spectrum"]


def _loss_and_params(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: str | Callable):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    params = [p for p in model.parameters() if p.requires_grad]
    # Attention through the math kernel: the fused CPU kernel has no double backward, which every H v needs
    with sdpa_kernel(SDPBackend.MATH):
        out = model(x)
    losses = loss(out, y) if callable(loss) else per_sample(loss, out, y)
    return losses.mean(), params


def hessian_operator(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: str | Callable) -> tuple[LinearOperator, int]:
    """(H as a scipy LinearOperator over the flattened parameters, their count): H v by double backward, with
    the gradient's graph kept between products. `loss`: a name in losses.LOSSES, or a function of (outputs,
    targets) giving per-sample losses; H is the Hessian of their mean."""
    value, params = _loss_and_params(model, x, y, loss)
    grads = torch.autograd.grad(value, params, create_graph=True)
    flat = torch.cat([g.reshape(-1) for g in grads])
    n = flat.numel()
    dtype = flat.dtype

    def matvec(v: np.ndarray) -> np.ndarray:
        vec = torch.as_tensor(np.ascontiguousarray(v).reshape(-1), dtype=dtype, device=flat.device)
        hv = torch.autograd.grad(flat, params, grad_outputs=vec, retain_graph=True)
        return torch.cat([h.reshape(-1) for h in hv]).detach().cpu().numpy()

    return LinearOperator((n, n), matvec=matvec, dtype=np.float64), n


def top_eigenvalues(op: LinearOperator, n: int, k: int, seed: int) -> np.ndarray:
    """The k algebraically largest eigenvalues, largest first (the Hessian's sharpest directions). eigsh needs
    k < n; k = n is answered through the dense matrix."""
    if k >= n:
        return np.sort(np.linalg.eigvalsh(_dense(op, n)))[::-1][:k]
    v0 = np.random.default_rng(seed).standard_normal(n)
    # tol: relative accuracy of the Ritz values. 1e-6 is far below what a figure or a ratio of eigenvalues
    # shows, and each Lanczos step is a double backward over the batch (0.1-1 s at width 784 on a CPU).
    values = eigsh(op, k=k, which="LA", v0=v0, return_eigenvectors=False, tol=1e-6)
    return np.sort(values)[::-1]


def _dense(op: LinearOperator, n: int) -> np.ndarray:
    h = np.stack([op.matvec(e) for e in np.eye(n)], axis=1)
    return (h + h.T) / 2  # symmetric up to rounding


def full_spectrum(op: LinearOperator, n: int) -> np.ndarray:
    """Every eigenvalue, ascending, from the dense Hessian built one column per Hessian-vector product."""
    return np.linalg.eigvalsh(_dense(op, n))


@register("hessian")
class HessianProbe:
    @staticmethod
    def wanted(cfg) -> bool:
        return cfg.probes.hessian_top > 0

    @staticmethod
    def check(cfg, parameters: int) -> None:
        if cfg.probes.hessian_top > parameters:
            raise ConfigError(f"--hessian-top {cfg.probes.hessian_top} is more eigenvalues than the starting network "
                              f"has parameters ({parameters:,})")

    def epoch(self, ctx: ProbeContext) -> dict:
        return {}

    def iteration(self, ctx: ProbeContext) -> dict:
        probes, train = ctx.cfg.probes, ctx.data.train
        g = torch.Generator().manual_seed(derive_seed(ctx.cfg.seed, ctx.depth, ctx.iteration, HESSIAN_ROWS))
        idx = torch.randperm(len(train), generator=g)[: min(len(train), probes.hessian_samples)].to(train.x.device)
        model = copy.deepcopy(ctx.model).double().eval()
        x, y = torch.index_select(train.x, 0, idx).double(), torch.index_select(train.y, 0, idx)
        op, n = hessian_operator(model, x, y, ctx.cfg.train.loss)
        full = n <= probes.hessian_full_max
        if full:
            spectrum = full_spectrum(op, n)
            top = spectrum[::-1][: probes.hessian_top]
        else:
            top = top_eigenvalues(op, n, min(probes.hessian_top, n), derive_seed(ctx.cfg.seed, ctx.depth, ctx.iteration, HESSIAN_ROWS))
        ctx.run.append(HESSIAN, {"depth": ctx.depth, "iteration": ctx.iteration, "full": full, "parameters": n,
                                 "eigenvalues": (spectrum if full else top).tolist()})
        return {"hessian_top": top.tolist(), "hessian_parameters": n, "hessian_samples": len(idx)}
