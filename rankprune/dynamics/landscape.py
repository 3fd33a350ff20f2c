"""The effect of output scaling on a one-parameter model (the lazy-training notebook's section 5, after Chizat,
Oyallon and Bach 2019): the loss of the scaled model beside the loss of its linearisation at w_0, in a window
around w_0 that narrows as alpha grows. Pure numpy and deterministic.

    f(x, w)      = w x / 2 + log(1 + w^2) x / 5 + 0.1 sin(exp(2 w))      a nonlinear model
    h(x, w)      = f(x, w) (w - w_0)                                     zero at w_0, as alpha (f - f_0) is
    h_lin(x, w)  = f(x, w_0) (w - w_0)                                   its linearisation at w_0 (h's derivative
                                                                          there is f(x, w_0))
    l(w, alpha)  = sum over the data of (alpha h(x, w) - y)^2 / 2 / alpha^2
    l_lin        = the same with h_lin: a quadratic in w

with w_0 = 1.5, the data [(1.5, 3)], alpha in 1, 5, 10, 50, 100, 1000, 2000, 10000 and the window
w_0 +- 2 / alpha^(3/4), as the notebook.
"""

from __future__ import annotations

import numpy as np

__all__ = ["W0", "DATA", "ALPHAS", "f", "h", "linear_h", "loss", "linear_loss", "window", "landscape"]

W0 = 1.5
DATA: tuple[tuple[float, float], ...] = ((1.5, 3.0),)
ALPHAS: tuple[float, ...] = (1, 5, 10, 50, 100, 1000, 2000, 10000)


def f(x, w):
    w = np.asarray(w, dtype=float)
    return w * x / 2 + np.log1p(w ** 2) * x / 5 + 0.1 * np.sin(np.exp(2 * w))


def h(x, w, w0: float = W0):
    return f(x, w) * (np.asarray(w, dtype=float) - w0)


def linear_h(x, w, w0: float = W0):
    return f(x, w0) * (np.asarray(w, dtype=float) - w0)


def _loss(model, w, alpha: float, data, w0: float) -> np.ndarray:
    w = np.asarray(w, dtype=float)
    return sum((alpha * model(x, w, w0) - y) ** 2 / 2 for x, y in data) / alpha ** 2 + np.zeros_like(w)


def loss(w, alpha: float, data=DATA, w0: float = W0) -> np.ndarray:
    """l(w, alpha) at every w (an array of w gives an array)."""
    return _loss(h, w, alpha, data, w0)


def linear_loss(w, alpha: float, data=DATA, w0: float = W0) -> np.ndarray:
    """The linearised model's loss at every w: a quadratic in w."""
    return _loss(linear_h, w, alpha, data, w0)


def window(alpha: float, w0: float = W0) -> tuple[float, float]:
    delta = 2 / alpha ** 0.75
    return w0 - delta, w0 + delta


def landscape(alphas=ALPHAS, count: int = 30_001, data=DATA, w0: float = W0) -> list[dict]:
    """Per alpha: {"alpha", "w" (count points over window(alpha)), "loss", "linear_loss"} (numpy arrays), and
    "w0". The default count resolves sin(exp(2 w)) at alpha 1, whose window reaches w = 3.5 where the phase
    turns by 2 e^7 (about 2,200) radians per unit of w: 30,001 points step it by at most 0.3 radians."""
    panels = []
    for a in alphas:
        ws = np.linspace(*window(a, w0), count)
        panels.append({"alpha": float(a), "w0": w0, "w": ws, "loss": loss(ws, a, data, w0),
                       "linear_loss": linear_loss(ws, a, data, w0)})
    return panels
