"""The jamming experiment's report section: the four figures of Geiger, Spigler et al. and the measured N* per
depth with its spread over seeds (dynamics/jamming.py ran the networks)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from rankprune import figures_jamming
from rankprune.analysis import mean_interval
from rankprune.dynamics.jamming import n_star
from rankprune.report.document import _Document

__all__ = ["tables", "star_table", "sections"]


def tables(units: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(checkpoints, finals): a row per network and measured step, and a row per network at its last step."""
    nets = [u for u in units if u.get("experiment") == "jamming"]
    keys = ("depth", "seed", "N", "h", "P", "d", "steps_run", "stopped")
    checkpoints = pd.DataFrame([{**{k: u[k] for k in keys}, **row} for u in nets for row in u["rows"]])
    finals = pd.DataFrame([{**{k: u[k] for k in keys}, **u["final"], "seconds": u.get("seconds")} for u in nets])
    if len(finals):
        finals["n_delta_per_N"] = finals["n_delta"] / finals["N"]
        finals["n_delta_per_h"] = finals["n_delta"] / finals["h"]
    return checkpoints, finals


def star_table(finals: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(stars, intervals): N* per depth and seed with its side ("=" measured, "<"/">" censored at the grid's end),
    and per depth the geometric mean of the measured ones with a 95% interval over seeds (on log N*)."""
    stars = pd.DataFrame([{"depth": depth, "seed": seed, "P": int(run["P"].iloc[0]),
                           **dict(zip(("n_star", "side"), n_star(run["N"].tolist(), run["n_delta_per_N"].tolist())))}
                          for (depth, seed), run in finals.groupby(["depth", "seed"])])
    rows = []
    for depth, part in stars.groupby("depth"):
        measured = part[part["side"] == "="]
        logs = np.log10(measured["n_star"].to_numpy(dtype=float))
        lo, hi, how = mean_interval(logs, units="seeds")
        rows.append({"depth": depth, "P": int(part["P"].iloc[0]), "seeds": len(part), "measured": len(measured),
                     "n_star": 10 ** logs.mean() if len(logs) else math.nan,
                     "n_star_low": 10 ** lo if np.isfinite(lo) else math.nan,
                     "n_star_high": 10 ** hi if np.isfinite(hi) else math.nan,
                     "how": how, "censored": ", ".join(f"seed {r.seed}: N* {r.side} {r.n_star:,.0f}"
                                                       for r in part.itertuples() if r.side != "=")})
    intervals = pd.DataFrame(rows)
    return stars, intervals[intervals["measured"] > 0] if len(intervals) else intervals


def _fmt(v: float, digits: int = 3) -> str:
    return "" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:,.{digits}g}"


def _loss_drop(finals: pd.DataFrame, stars: pd.DataFrame) -> pd.DataFrame:
    """Per depth and seed: the training loss at the step budget of the last grid network with N_Delta >= N and of
    the network nearest 10 N*, and the orders of magnitude between (zero loss: 'zero')."""
    rows = []
    for r in stars[stars["side"] == "="].itertuples():
        run = finals[(finals["depth"] == r.depth) & (finals["seed"] == r.seed)].sort_values("N")
        jammed = run[run["n_delta_per_N"] >= 1].iloc[-1]
        past = run.iloc[int(np.argmin(np.abs(np.log(run["N"] / (10 * r.n_star)))))]
        drop = ("zero loss" if past["train_loss"] == 0 else f"{math.log10(jammed['train_loss'] / past['train_loss']):.1f}")
        rows.append({"depth": r.depth, "seed": r.seed, "N*": f"{r.n_star:,.0f}",
                     "last jammed N": f"{int(jammed['N']):,}", "its loss": f"{jammed['train_loss']:.3g}",
                     "N nearest 10 N*": f"{int(past['N']):,}", "loss there": f"{past['train_loss']:.3g}",
                     "orders of magnitude lower": drop})
    return pd.DataFrame(rows)


def sections(doc: _Document, units: list[dict], settings: dict) -> None:
    checkpoints, finals = tables(units)
    if finals.empty:
        doc.add("No network has finished yet.", "")
        return
    stars, intervals = star_table(finals)
    s = settings
    doc.add("## The jamming transition", "",
            f"Fully connected ReLU networks of depth {', '.join(map(str, sorted(finals['depth'].unique())))} with one "
            f"output, trained on {s['dataset']} parity (+1 odd, -1 even): P = {s['points']:,} training images, half of "
            f"each parity, projected on their first d = {s['dim']} principal components and whitened. Widths h from "
            f"`find_h` for N from {min(s['params']):,} to {max(s['params']):,} weights (biases not counted). Quadratic "
            f"hinge loss, no weight decay, {s['optimizer']} (learning rate {s['lr']:g}) on "
            + ("the full batch" if not s.get("batch_size") else f"batches of {s['batch_size']} unsatisfied patterns")
            + f", {s['precision']}, for {s['steps']:,} steps or until the loss is exactly zero; measured at "
            f"{s['checkpoints']} log-spaced steps. Seeds: {', '.join(map(str, s['seeds']))} (each draws the P images "
            "and every initialisation). A constraint is one pattern's margin; N_Delta counts those with "
            "Delta = 1 - y f >= 0.", "")
    doc.figure("jamming-ndelta-per-N", lambda: figures_jamming.delta_against_loss(checkpoints, "N"),
               "training loss against N_Delta / N, coloured by step",
               f"Every network at every measured step (all seeds). The jamming point is where N_Delta / N crosses 1 "
               f"(dotted). Left out, having no place on log axes: {int(((checkpoints['train_loss'] == 0) | (checkpoints['n_delta'] == 0)).sum())} "
               "rows with zero loss or N_Delta = 0. Look for networks that stay to the right of the line with a loss "
               "that stops falling (jammed) and ones whose loss falls by orders of magnitude as N_Delta / N drops "
               "below 1.")
    doc.figure("jamming-ndelta-per-h", lambda: figures_jamming.delta_against_loss(checkpoints, "h"),
               "training loss against N_Delta / h, coloured by step",
               "The same rows against N_Delta / h, h the width of one hidden layer (`find_h`), as the jamming notebook "
               "also draws them.")
    doc.figure("jamming-end-of-training", lambda: figures_jamming.end_of_training(finals, stars),
               "N_Delta / N, training loss and test loss at the step budget against N",
               "At the step budget, a line per depth and seed. Dashed: each depth's N* (the median of its seeds' "
               "measured crossings). Look for N_Delta / N falling through 1 and the training loss dropping by orders "
               "of magnitude across N*, and for the test loss near N*.")
    doc.figure("jamming-phase-diagram", lambda: figures_jamming.phase_diagram(finals, stars, intervals),
               "phase diagram: P / N against depth with the jamming line",
               "Every network at the step budget (sideways jitter separates the seeds); filled: N_Delta >= N. The "
               "line joins P / N* per depth, N* the geometric mean over the seeds whose crossing lies inside the grid, "
               "with Student's t interval over them.")
    doc.add("### N* per depth", "",
            "N* is where N_Delta / N at the step budget falls through 1 as N grows, linear in log N between the grid's "
            "networks on either side of 1. A seed whose networks all sit on one side is censored at the grid's end "
            "and left out of the mean (listed). The mean and its interval are taken over seeds on log10 N*.", "")
    doc.table(intervals.assign(
        **{"N* (geometric mean)": intervals["n_star"].map(lambda v: f"{v:,.0f}"),
           "95% interval": [f"{lo:,.0f} to {hi:,.0f}" if np.isfinite(lo) else "" for lo, hi in
                            zip(intervals["n_star_low"], intervals["n_star_high"])],
           "P / N*": (intervals["P"] / intervals["n_star"]).map(lambda v: f"{v:.2f}"),
           "seeds measured": [f"{m} of {n}" for m, n in zip(intervals["measured"], intervals["seeds"])]},
    )[["depth", "N* (geometric mean)", "95% interval", "P / N*", "seeds measured", "how", "censored"]].astype(str))
    doc.table(stars.assign(n_star=stars["n_star"].map(lambda v: f"{v:,.0f}"))[["depth", "seed", "side", "n_star"]]
              .rename(columns={"side": "N* is (=, or censored < / >)", "n_star": "N*"}).astype(str))
    drop = _loss_drop(finals, stars)
    if len(drop):
        doc.add("Training loss at the step budget on either side of N*, per depth and seed:", "")
        doc.table(drop)
    hess = _spectra(units, stars)
    if len(hess):
        sizes = sorted(hess["N"].unique())
        doc.figure("jamming-hessian", lambda: figures_jamming.hessian_density(hess),
                   "density of sqrt(eigenvalue) of the Hessian, at initialisation and at the step budget",
                   f"The full Hessian of the training loss on all P patterns (float64; a dense matrix, so only networks "
                   f"of at most {s['hessian_max']:,} parameters: N = {', '.join(f'{int(n):,}' for n in sizes)}), seed "
                   f"{int(hess['seed'].iloc[0])}. Colour: N; solid below the jamming point N*, dashed above it; the legend counts each spectrum's positive eigenvalues (the rest are zero within rounding or negative). Only "
                   "patterns with Delta > 0 contribute, so a network at zero loss has H = 0. Look for how the spectrum "
                   "changes from initialisation to the end, and between the two sides of N*.")
    cost = finals.groupby("depth")["seconds"].sum()
    doc.add(f"Time: {', '.join(f'depth {d}: {v:,.0f} s' for d, v in cost.items())} of training and Hessians, summed over "
            f"networks (one thread each).", "")


def _spectra(units: list[dict], stars: pd.DataFrame) -> pd.DataFrame:
    """The Hessian spectra of the first seed that has any, with each network's N / N* (its depth's and seed's N*)."""
    nets = [u for u in units if u.get("experiment") == "jamming" and u.get("hessian")]
    if not nets:
        return pd.DataFrame()
    seed = min(u["seed"] for u in nets)
    rows = []
    for u in nets:
        if u["seed"] != seed:
            continue
        star = stars[(stars["depth"] == u["depth"]) & (stars["seed"] == seed)]
        ratio = u["N"] / float(star["n_star"].iloc[0]) if len(star) and star["side"].iloc[0] == "=" else math.nan
        for when in ("init", "end"):
            h = u["hessian"].get(when)
            if h is not None:
                rows.append({"depth": u["depth"], "seed": seed, "N": u["N"], "ratio": ratio, "when": when,
                             "eigenvalues": h["eigenvalues"]})
    return pd.DataFrame(rows)
