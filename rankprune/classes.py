"""Equivalence classes of convergent rank, and rank-versus-generalisation trends, over finished trials.

Pure functions of a DataFrame (one row per finished trial, as `trials_frame` builds it), so they
work the same on a study read from any storage. Every p-value comes from rankprune.analysis. A trial
is censored where any hidden layer's width is a bound, not a measured rank (its `censored` attribute:
per layer None, "initial" or "input"; studies made before it was recorded have none censored). Trials
are chosen ("best", a class's representative) on validation accuracy and shown with their test figures.
"""

from __future__ import annotations

import numpy as np
import optuna
import pandas as pd
from scipy.cluster.hierarchy import fclusterdata

from rankprune.analysis import holm, is_censored, trend

__all__ = ["trials_frame", "equivalence_classes", "class_table", "best_trial", "rank_trends", "overfitting_pairs", "BY"]

# How two trials' convergent ranks are compared.
BY = {
    "vector": "ranks",  # per-layer ranks; only networks of the same depth can be equal
    "sum": "network_rank_sum",
    "normalized": "network_rank_normalized",
}


def trials_frame(study: optuna.Study, root=None) -> pd.DataFrame:
    """Finished trials: number, sampled params (param_*), and every user attribute as a column; `run_folder` as a path
    on this machine, a relative one (what trials record, study.stored_folder) under `root`, the reader's --root.

    A trial whose parameters equal an earlier finished trial's is the same experiment again (same
    config, same seed: the same network on the CPU); counted twice it would inflate a class and weigh
    double in a trend. Only the first is kept; `frame.attrs["repeats"]` maps each dropped trial
    number to the number of the trial it repeats.
    """
    rows, first, repeats = [], {}, {}
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        if "ranks" not in t.user_attrs:
            continue
        key = repr(sorted(t.params.items()))
        if key in first:
            repeats[t.number] = first[key]
            continue
        first[key] = t.number
        row = {"number": t.number, **{f"param_{k}": v for k, v in t.params.items()}, **t.user_attrs}
        if isinstance(row.get("run_folder"), str):
            from rankprune.study import trial_folder

            row["run_folder"] = str(trial_folder(row["run_folder"], root))
        rows.append(row)
    frame = pd.DataFrame(rows)
    frame.attrs["repeats"] = repeats
    return frame


def equivalence_classes(df: pd.DataFrame, by: str = "vector", tol: float = 0.0) -> pd.Series:
    """A class id per trial: single-linkage clusters whose members differ by at most `tol`.

    For `vector`, the distance is the largest per-layer difference (Chebyshev) within one depth;
    for `sum` and `normalized`, the difference of the scalars. tol=0 groups exactly equal ranks.
    Class ids are numbered from 1 in order of their signature.
    """
    if df.empty:
        return pd.Series(dtype=int)
    column = BY[by]
    labels = pd.Series(0, index=df.index, dtype=int)
    groups = df.groupby(df["ranks"].map(len)) if by == "vector" else [(None, df)]
    keyed = []
    for _, part in groups:
        x = np.array(part[column].tolist(), dtype=float).reshape(len(part), -1)
        if len(part) == 1:
            ids = np.array([1])
        else:
            # A tiny epsilon makes distance <= tol inclusive (fcluster cuts at > t).
            ids = fclusterdata(x, t=tol + 1e-9, criterion="distance", metric="chebyshev", method="single")
        for cid in np.unique(ids):
            members = part.index[ids == cid]
            signature = tuple(np.round(x[ids == cid].mean(axis=0), 4))
            keyed.append(((len(signature), signature), members))
    for new_id, (_, members) in enumerate(sorted(keyed, key=lambda k: k[0]), start=1):
        labels[members] = new_id
    return labels


def best_trial(df: pd.DataFrame) -> pd.Series | None:
    """The trial with the highest validation accuracy (ties: the lowest number); None without any. Never chosen
    on test accuracy: that is only reported."""
    if df.empty or "val_acc" not in df or df["val_acc"].isna().all():
        return None
    return df.sort_values(["val_acc", "number"], ascending=[False, True]).iloc[0]


def _censored_members(part: pd.DataFrame) -> str:
    if "censored" not in part:
        return ""
    return ", ".join(str(n) for n in part.loc[is_censored(part["censored"]), "number"])


CLASS_COLUMNS = ["class", "signature", "n", "members", "censored", "initial_widths", "test_acc_mean", "test_acc_std",
                 "representative", "representative_val_acc", "representative_test_acc"]


def class_table(df: pd.DataFrame, by: str = "vector", tol: float = 0.0) -> pd.DataFrame:
    """One row per class: its rank signature, members, their initial architectures, accuracy mean and spread.

    `censored` lists the members whose rank vector holds a bound rather than a measured rank (they belong to
    the class by that bound). The representative is the member with the highest validation accuracy (ties:
    the lowest trial number), shown with its validation and test accuracy.
    """
    if df.empty:
        return pd.DataFrame(columns=CLASS_COLUMNS)
    df = df.assign(**{"class": equivalence_classes(df, by, tol)})
    column = BY[by]
    rows = []
    for cid, part in df.groupby("class"):
        values = np.array(part[column].tolist(), dtype=float)
        lo, hi = values.min(axis=0), values.max(axis=0)
        if by == "vector":
            signature = "[" + ", ".join(f"{a:g}" if a == b else f"{a:g}-{b:g}" for a, b in zip(lo, hi)) + "]"
        else:
            signature = f"{lo:g}" if lo == hi else f"{lo:g}-{hi:g}"
        best = best_trial(part)
        rows.append({
            "class": int(cid),
            "signature": signature,
            "n": len(part),
            "members": ", ".join(str(n) for n in part["number"]),
            "censored": _censored_members(part),
            "initial_widths": "; ".join(str(list(w)) for w in part["initial_widths"]),
            "test_acc_mean": part["test_acc"].mean(),
            "test_acc_std": part["test_acc"].std(ddof=1) if len(part) > 1 else 0.0,
            "representative": "" if best is None else int(best["number"]),
            "representative_val_acc": np.nan if best is None else best["val_acc"],
            "representative_test_acc": np.nan if best is None else best["test_acc"],
        })
    return pd.DataFrame(rows, columns=CLASS_COLUMNS)


OUTCOMES = ("test_acc", "generalisation_gap", "parameters")


def rank_trends(df: pd.DataFrame, rank: str = "network_rank_sum", include_censored: bool = False,
                seed: int = 0) -> pd.DataFrame:
    """Spearman correlation of a network-rank form with each outcome (OUTCOMES), one row each.

    Each trial is a unit (trials_frame has dropped repeats); the p-value is a permutation test of the rank
    (exact up to 9 trials, else seeded Monte Carlo: `test` says which), and `p_holm` is Holm's correction over
    the outcomes reported together. ci_low and ci_high bound a BCa bootstrap interval of rho over trials (nan
    with fewer than analysis.MIN_BOOTSTRAP trials). Censored trials are left out unless `include_censored`;
    `n` counts the trials tested, and `frame.attrs["excluded"]` lists those left out ("#N [initial/-]");
    `frame.attrs["verdicts"]` holds the analysis.Verdict of each row. Fewer than 3 trials, or no spread in
    the rank or the outcome: no test (nan).
    """
    trials = df.assign(trial="#" + df["number"].astype(str)) if "number" in df else df
    verdicts = holm([trend(trials, rank, outcome, unit=None, row_unit="trial", label="trial",
                           include_censored=include_censored, seed=seed) for outcome in OUTCOMES],
                    f"{rank} against {', '.join(OUTCOMES)}")
    rows = []
    for outcome, v in zip(OUTCOMES, verdicts):
        lo, hi = v.effect.ci if v.effect.ci is not None else (np.nan, np.nan)
        rows.append({"rank": rank, "versus": outcome, "spearman_rho": v.effect.estimate, "ci_low": lo, "ci_high": hi,
                     "p_value": v.p_value, "p_holm": np.nan if v.p_adjusted is None else v.p_adjusted,
                     "p_floor": v.p_floor, "n": v.n, "test": v.test})
    out = pd.DataFrame(rows)
    out.attrs["excluded"] = list(verdicts[0].excluded)
    out.attrs["verdicts"] = verdicts
    return out


def overfitting_pairs(df: pd.DataFrame, rank: str = "network_rank_sum", train_tol: float = 0.01) -> pd.DataFrame:
    """Pairs where the higher-rank network has the lower test accuracy at similar training accuracy
    (|train_acc difference| <= train_tol): the overfitting cases of research question 2.
    Columns *_high belong to the higher-rank trial, *_low to the lower-rank one."""
    rows = []
    recs = df.to_dict("records")
    for a in recs:
        for b in recs:
            if a[rank] > b[rank] and a["test_acc"] < b["test_acc"] and abs(a["train_acc"] - b["train_acc"]) <= train_tol:
                rows.append({
                    "trial_high": a["number"], "trial_low": b["number"],
                    "rank_high": a[rank], "rank_low": b[rank],
                    "test_acc_high": a["test_acc"], "test_acc_low": b["test_acc"],
                    "train_acc_high": a["train_acc"], "train_acc_low": b["train_acc"],
                })
    out = pd.DataFrame(rows)
    if not out.empty:
        out = out.sort_values(["test_acc_low", "trial_high"], ascending=[False, True], ignore_index=True)
    return out
