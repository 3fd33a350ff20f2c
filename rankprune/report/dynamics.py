"""The report's training-dynamics sections: weight movement (--movement), the Hessian (--hessian-top), and for a
regression task the fitted function over its data. Each adds nothing when its run has nothing to show."""

from __future__ import annotations

import torch

from rankprune import figures_dynamics
from rankprune.config import RunConfig
from rankprune.report.document import _Document, _list, _num
from rankprune.report.gather import RunData, widths_censored
from rankprune.runfolder import RunFolder
from rankprune.units import widths_text

__all__ = ["movement", "hessian", "fitted"]


def movement(doc: _Document, run: RunData) -> None:
    epochs = run.epochs
    if epochs.empty or "movement" not in epochs:
        return
    doc.add("## How far training moved the weights", "")
    for depth in sorted(epochs["depth"].unique()):
        part = epochs[(epochs["depth"] == depth) & epochs["movement"].notna()]
        if part.empty:
            continue
        doc.figure(f"movement-depth-{depth}", lambda part=part: figures_dynamics.movement_across_epochs(part, run.measure),
                   f"relative weight movement and the rank of the change, depth {depth}",
                   f"Depth {depth}: relative Frobenius movement of each weight matrix from its iteration's start and from "
                   f"the first initialisation (log scales; absent once a shrink changed the layer's shape), and the rank "
                   f"`{run.measure}` of the change W - W_start. Look for small movement (the lazy regime, where the "
                   "spectrum stays the random initialisation's) and for a change of low rank (a low-rank update on a "
                   "full-rank matrix).")
    if not run.iterations.empty and "movement" in run.iterations:
        rows = run.iterations.dropna(subset=["movement"])
        doc.table(rows.assign(
            widths=[widths_text(w, m) for w, m in zip(rows["widths"], widths_censored(run.iterations, run.depths)[rows.index])],
            movement=rows["movement"].map(lambda v: _list([round(x, 4) for x in v])),
            change_rank=rows[f"change_rank_{run.measure}"].map(_list) if f"change_rank_{run.measure}" in rows else "",
            network=rows["movement_network"].map(lambda v: _num(round(v, 4))),
        )[["depth", "iteration", "widths", "movement", "network", "change_rank"]].astype(str).rename(columns={
            "movement": "movement per layer (from the iteration's start)", "network": "whole network",
            "change_rank": f"rank `{run.measure}` of the change"}))


def hessian(doc: _Document, run: RunData) -> None:
    it = run.iterations
    if it.empty or "hessian_top" not in it or it["hessian_top"].isna().all():
        return
    doc.add("## Hessian of the training loss", "")
    doc.figure("hessian-top", lambda: figures_dynamics.hessian_top_per_iteration(it.dropna(subset=["hessian_top"])),
               "top Hessian eigenvalues per iteration",
               "The largest eigenvalues of the training loss's Hessian at the end of each iteration (Lanczos on "
               "Hessian-vector products, float64, on a fixed seeded batch of training rows), the largest darkest. "
               "Look for the sharpest directions growing or flattening as the network shrinks.")
    if not run.hessian.empty and run.hessian["full"].any():
        doc.figure("hessian-density", lambda: figures_dynamics.hessian_density(run.hessian),
                   "density of sqrt(eigenvalue) of the full Hessian",
                   "Networks small enough for the whole spectrum (--hessian-full-max): the density of the square roots "
                   "of the positive eigenvalues on log axes, as the jamming experiments draw it; a line per iteration "
                   "(dark: early). The legend counts the eigenvalues at or below zero (below 1e-10 of the largest), which are not "
                   "drawn. Look for the gap between the bulk near zero and the few large outliers.")


def fitted(doc: _Document, run: RunData) -> None:
    """A regression task: the data, the target and each depth's chosen network over [-1, 1]."""
    from rankprune.regression import is_regression, target

    cfg_dict = run.config
    if not is_regression(cfg_dict.get("data", {}).get("dataset", "")) or not run.depths:
        return
    from rankprune.data import load
    from rankprune.scaling import center_and_scale
    cfg = RunConfig.from_dict(cfg_dict)
    data = load(cfg.data, cfg.data_seed)  # regression tasks are drawn from the seed: the same points as trained on
    folder = RunFolder(run.path)
    xs = torch.linspace(-1, 1, 801).unsqueeze(1)
    fits = {}
    for key, s in sorted(run.depths.items(), key=lambda kv: int(kv[0])):
        row = {"widths": s["widths"], "iteration": s["chosen_iteration"]}
        try:
            saved = [cfg.model.family, data.input_shape, row["widths"], data.n_classes, int(key), row["iteration"]]
            model = folder.load_network(*saved)
            if cfg.model.alpha is not None:  # alpha * (f - f_0), f_0 where the chosen iteration started
                center_and_scale(model, cfg.model.alpha, folder.load_network(*saved, start=True))
        except (OSError, RuntimeError):
            continue  # weights missing or from another shape: nothing to draw for this depth
        with torch.no_grad():
            fits[f"depth {key}, widths {widths_text(s['widths'], s.get('censored'))}: test R^2 {s['test_acc']:.3f}"] = (
                model.eval()(xs)[:, 0].numpy())
    if not fits:
        return
    doc.add("## The fitted function", "")
    f = target(cfg.data.dataset)
    doc.figure("fitted-function", lambda: figures_dynamics.fitted_function(
        data.train.x[:, 0].numpy(), data.train.y.numpy(), xs[:, 0].numpy(), f(xs[:, 0]).numpy(), fits),
        "the fitted function over the training points",
        f"`{cfg.data.dataset}`: the {len(data.train)} training points (noise sd {cfg.data.noise:g}), the target function "
        "(dashed) and each depth's chosen network over [-1, 1]. Every accuracy in this report is R^2 for this task "
        "(1: a perfect fit; 0: the mean), on noise-free validation and test points. Look for how the fit behaves "
        "between the training points: smooth interpolation, or wiggles that chase the noise.")
