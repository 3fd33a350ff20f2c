"""Equivalence classes of convergent rank, and rank-versus-generalisation trends, over finished trials.

Pure functions of a DataFrame (one row per finished trial, as `trials_frame` builds it), so they
work the same on a study read from any storage.
"""

from __future__ import annotations

import numpy as np
import optuna
import pandas as pd
from scipy.cluster.hierarchy import fclusterdata
from scipy.stats import spearmanr

__all__ = ["trials_frame", "equivalence_classes", "class_table", "rank_trends", "overfitting_pairs", "BY"]

# How two trials' convergent ranks are compared.
BY = {
    "vector": "ranks",  # per-layer ranks; only networks of the same depth can be equal
    "sum": "network_rank_sum",
    "normalized": "network_rank_normalized",
}


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """Finished trials: number, sampled params (param_*), and every user attribute as a column.

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
        rows.append({"number": t.number, **{f"param_{k}": v for k, v in t.params.items()}, **t.user_attrs})
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


def class_table(df: pd.DataFrame, by: str = "vector", tol: float = 0.0) -> pd.DataFrame:
    """One row per class: its rank signature, members, their initial architectures, accuracy mean and spread."""
    if df.empty:
        return pd.DataFrame(columns=["class", "signature", "n", "members", "initial_widths", "test_acc_mean", "test_acc_std"])
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
        rows.append({
            "class": int(cid),
            "signature": signature,
            "n": len(part),
            "members": ", ".join(str(n) for n in part["number"]),
            "initial_widths": "; ".join(str(list(w)) for w in part["initial_widths"]),
            "test_acc_mean": part["test_acc"].mean(),
            "test_acc_std": part["test_acc"].std(ddof=1) if len(part) > 1 else 0.0,
        })
    return pd.DataFrame(rows)


def rank_trends(df: pd.DataFrame, rank: str = "network_rank_sum") -> pd.DataFrame:
    """Spearman correlations (with p-values) between a network-rank form and the outcomes."""
    rows = []
    for outcome in ("test_acc", "generalisation_gap", "parameters"):
        if len(df) < 3 or df[rank].nunique() < 2 or df[outcome].nunique() < 2:
            rho, p = float("nan"), float("nan")
        else:
            res = spearmanr(df[rank], df[outcome])
            rho, p = float(res.statistic), float(res.pvalue)
        rows.append({"rank": rank, "versus": outcome, "spearman_rho": rho, "p_value": p, "n": len(df)})
    return pd.DataFrame(rows)


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
