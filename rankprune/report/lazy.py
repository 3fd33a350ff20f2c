"""The report's lazy-training sections (rankprune/dynamics/lazy.py, landscape.py): per experiment present among
the units, its figures, a table of final loss and movement per setting, and for widths and alpha the movement
exponent with its interval. What is shown is what was measured; the paper's predictions are named as such and
never asserted."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from rankprune import figures_lazy
from rankprune.dynamics import landscape as landscape_model
from rankprune.dynamics import lazy
from rankprune.report.document import _Document, _num

__all__ = ["sections", "landscape_section", "final_table", "exponent_table"]

TITLES = {
    "widths": "thin and wide networks",
    "alpha": "output scaling α",
    "random-features": "a linear model on fixed sine features",
    "bad-init": "a bad initialisation",
}
MODELS = {
    "widths": "a shallow ReLU network Linear(1, h) - ReLU - Linear(h, 1), PyTorch's default initialisation",
    "alpha": "a ReLU network with three hidden layers of 8 units, made to compute α (f(x) − f₀(x)) with f₀ a "
             "frozen copy of its initial self, so that it starts at exactly zero output; every α of a seed starts "
             "from the same base network, and the learning rate is divided by α²",
    "random-features": "a linear model on fixed features sin(2πkx), cos(2πkx), k = 0 … d/2 − 1: only its last "
                       "linear layer trains",
    "bad-init": "a shallow ReLU network of width 100: the bad one first takes 2 full-batch steps at learning rate "
                "1 (the bad initialisation), the good one (the control) starts from its default initialisation; "
                "both then train the same number of steps at the same learning rate",
}
BY = {"widths": "width", "alpha": "alpha"}


def _span(values: list[float]) -> str:
    """median [min, max] of finite values, 3 significant digits; '' when none."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if v.size == 0:
        return ""
    if v.size == 1:
        return _num(float(v[0]))
    return f"{_num(float(np.median(v)))} [{_num(float(v.min()))}, {_num(float(v.max()))}]"


def _last(final: dict, key: str = "movement"):
    m = final.get(key) or []
    return m[-1] if m else math.nan


def final_table(units: list[dict]) -> pd.DataFrame:
    """Per setting: seeds, steps, learning rate, and the final training loss, last-matrix and whole-network
    movement as median [min, max] over seeds (bad-init: also the whole network's movement from the very first
    initialisation); networks whose loss stopped being finite are counted, their values left out."""
    name = units[0]["setting"]
    rows = []
    for v in figures_lazy.ordered_settings(units):
        mine = [u for u in units if u[name] == v]
        ok = [u for u in mine if not u.get("diverged")]
        row = {
            "setting": figures_lazy.setting_label(name, v),
            "seeds": str(len(mine)),
            "steps": ", ".join(sorted({f"{u['steps']:,}" for u in mine})),
            "learning rate": ", ".join(sorted({f"{u['lr']:.3g}" for u in mine})),
            "final training loss (MSE)": _span([u["final"]["loss"] for u in ok]),
            "movement, last matrix": _span([_last(u["final"]) for u in ok]),
            "movement, whole network": _span([u["final"]["movement_network"] for u in ok]),
        }
        if any("movement_network_from_init" in u["final"] for u in mine):
            row["whole network from the first initialisation"] = _span(
                [u["final"].get("movement_network_from_init", math.nan) for u in ok])
        row["diverged"] = str(len(mine) - len(ok))
        rows.append(row)
    return pd.DataFrame(rows)


def exponent_table(fit: dict) -> pd.DataFrame:
    """One row per movement (last matrix, whole network): the mean slope over seeds, its interval and how it was
    made, and each seed's slope."""
    rows = []
    for key, what in (("last_layer", "last weight matrix"), ("network", "whole network")):
        f = fit[key]
        interval = f"[{_num(f['low'])}, {_num(f['high'])}]" if math.isfinite(f["low"]) else "none"
        rows.append({
            "movement of": what,
            "mean slope": _num(f["slope"]) if math.isfinite(f["slope"]) else "",
            "95% interval": interval,
            "per seed": ", ".join(f"{p['seed']}: {_num(p['slope'])}" for p in f["per_seed"]),
            "interval from": f["how"],
        })
    return pd.DataFrame(rows)


def _runs_text(units: list[dict], settings: dict) -> str:
    u0 = units[0]
    seeds = sorted({u["seed"] for u in units})
    batches = sorted({u["batch"] for u in units})
    decay = settings.get("decay_to_init", u0.get("decay_to_init", 0)) or 0
    noise = settings.get("noise", u0.get("noise", 0)) or 0
    return (f"{len(units)} networks: {MODELS[u0['experiment']]}. Data: {u0['n_points']} training points, x uniform "
            f"on [−1, 1], y the `{u0['target']}` target" + (f" plus Gaussian noise of standard deviation {noise:g}"
                                                             if noise else " without noise")
            + f", drawn afresh for each seed ({', '.join(map(str, seeds))}) and shared by every network of a seed. "
            f"Training: plain SGD on the mean squared error, batch {', '.join(map(str, batches))} "
            f"({'all points' if all(b >= u0['n_points'] for b in batches) else 'a random batch each step'}), "
            + (f"with a decay towards the initial weights of λ = {decay:g}. " if decay else "no weight decay. ")
            + "Movement is ‖W − W₀‖ / ‖W₀‖ (Frobenius norms) from the weights W₀ where training started, for "
            "each weight matrix, and the same over all parameters together.")


def _dynamics_caption(experiment: str, name: str) -> str:
    what = {"width": "width", "alpha": "α", "feature_dim": "number of features", "init": "initialisation"}[name]
    text = (f"Training loss (left), relative movement of the last weight matrix (middle) and of all parameters "
            f"together (right) against the SGD step, both axes logarithmic and from step 1 (step 0 has no movement). "
            f"A colour per {what}; thin lines are single seeds, the bold line the median over seeds at each "
            f"logged step. ")
    look = {
        "widths": "Look for how the level of movement at a given step changes with width, and how far the loss has "
                  "fallen by then.",
        "alpha": "Look for how the curves of movement shift as α grows, and whether the loss curves of different α "
                 "lie on each other.",
        "random-features": "Only the last layer trains here, so the two movement panels differ only by the bias. "
                           "Look for how the loss and the movement of 8 and of 200 features evolve over their "
                           "different numbers of steps.",
        "bad-init": "Movement is from where the common training steps start (after the 2 bad steps for the bad "
                    "initialisation). Look for the difference in movement and loss between the two.",
    }[experiment]
    return text + look


def _fits_caption(experiment: str) -> str:
    text = ("One panel per seed: the target function (dashed), the seed's training points (dots) and the function "
            "each network computes after training, over [−1, 1]; the y-axis stops one data span beyond the target "
            "and the points, so a function far outside them is cut off. ")
    look = {
        "widths": "Look for how closely each width passes through the points and what it does between them.",
        "alpha": "Every α starts from the zero function. Look for how the trained functions of different α "
                 "compare with each other and with the points.",
        "random-features": "Look for how each model passes through the points and how it behaves between them "
                           "(200 features are drawn on a finer grid, 10 points per period of the fastest feature).",
        "bad-init": "Dotted: the function where the common training steps started (the bad initialisation's after "
                    "its 2 steps at learning rate 1; the control's is its default initialisation). "
                    "Look for how far each start is from the points and where the trained functions end.",
    }[experiment]
    return text + look


def sections(doc: _Document, units: list[dict], settings: dict) -> None:
    """A section per lazy-training experiment present among `units` (dicts from lazy.units' computations), in
    lazy.EXPERIMENTS order. `settings`: the experiment's settings (LazySettings.to_dict()), for what the text
    states beyond the units themselves."""
    settings = settings or {}
    for experiment in lazy.EXPERIMENTS:
        mine = [u for u in units if u.get("experiment") == experiment and u.get("rows")]
        if not mine:
            continue
        name = mine[0]["setting"]
        slug = f"lazy-{experiment}"
        doc.add(f"## Lazy training: {TITLES[experiment]}", "", _runs_text(mine, settings), "")
        doc.figure(f"{slug}-dynamics", lambda mine=mine: figures_lazy.dynamics(mine),
                   f"training loss and relative movement per SGD step, {TITLES[experiment]}",
                   _dynamics_caption(experiment, name))
        doc.figure(f"{slug}-fits", lambda mine=mine, e=experiment: figures_lazy.fits(mine, show_start=e == "bad-init"),
                   f"fitted functions against the target, {TITLES[experiment]}", _fits_caption(experiment))
        doc.add("At the last logged step, median [min, max] over seeds:", "")
        doc.table(final_table(mine))
        if experiment in BY:
            by = BY[experiment]
            fit = lazy.exponent(mine, by)
            what = "width" if by == "width" else "α"
            doc.figure(f"{slug}-exponent", lambda mine=mine, fit=fit: figures_lazy.movement_exponent(mine, fit),
                       f"final relative movement against {what}, log-log, with each seed's fitted line",
                       f"Final relative movement against {what} on log-log axes, for the last weight matrix (left) "
                       f"and all parameters together (right): each seed's networks as points (nudged sideways so "
                       f"that seeds do not hide each other) and its least-squares line; the panel titles give the "
                       f"mean slope over seeds with its 95% interval. Look for whether the points of a seed lie "
                       f"near a straight line and how the slopes of the seeds agree.")
            doc.add(f"Movement exponent: the least-squares slope of log(final movement) against log({what}), per "
                    f"seed, and its mean over seeds. For comparison only, not tested here: lazy-training theory "
                    f"relates movement to 1/α for output scaling, and wide networks in the NTK parametrisation to "
                    f"a movement shrinking with width; these networks use PyTorch's default parametrisation and a "
                    f"fixed learning rate, so the measured slope is what is reported.", "")
            doc.table(exponent_table(fit))


def landscape_section(doc: _Document) -> None:
    """The notebook's one-parameter model: the scaled model's loss beside its linearisation's, per alpha."""
    panels = landscape_model.landscape()
    doc.add("## Lazy training: the loss of a scaled one-parameter model", "",
            f"f(x, w) = w x / 2 + log(1 + w²) x / 5 + 0.1 sin(exp(2w)), h(x, w) = f(x, w)(w − w₀) and its "
            f"linearisation at w₀, f(x, w₀)(w − w₀), with w₀ = {landscape_model.W0:g} and one data point "
            f"(x, y) = {landscape_model.DATA[0]}. The loss of the scaled model is (α h(x, w) − y)² / 2 / α², the "
            f"linearised model's the same with its linearisation, drawn over the window w₀ ± 2 / α^(3/4), which "
            f"narrows as α grows. Computed in closed form; no training and no seed.", "")
    doc.figure("lazy-landscape", lambda: figures_lazy.landscape(panels),
               "loss of the scaled model and of its linearisation, one panel per alpha",
               "One panel per α: the loss of the scaled model (solid) and of its linearisation at w₀ (dashed) "
               "against w − w₀ over the window w₀ ± 2 / α^(3/4); axis labels name a power of ten where one "
               "scales the axis. Look for where in each window the two curves part, and how that changes with α.")
    rows = []
    for p in panels:
        gap = float(np.max(np.abs(p["loss"] - p["linear_loss"])))
        top = float(np.max(p["linear_loss"]))
        rows.append({"α": _num(p["alpha"]), "window half-width": _num(2 / p["alpha"] ** 0.75),
                     "largest difference of the losses in the window": _num(gap),
                     "relative to the linearised loss's largest there": _num(gap / top) if top > 0 else ""})
    doc.add("The largest difference between the two losses within each window, as drawn:", "")
    doc.table(pd.DataFrame(rows))
