"""The report's section on what each warm rebuild cost in function (rebuild.RebuildCost, on held-out rows: the
validation inputs). Adds nothing to a run without a warm rebuild (reinit, runs made before the cost was recorded,
a depth that never shrank)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from rankprune.figures import _colours, _grid, _layer_name, _plain_log_y, _whole_numbers
from rankprune.report.document import _Document, _list, _pct
from rankprune.report.gather import RunData

__all__ = ["rebuild_cost", "rebuild_errors_per_iteration"]

# An error below this is a layer that kept every unit (its decomposition is a permutation): nothing to draw on a
# log scale, and the table shows it as it is.
FLOOR = 1e-12


def _errors(v) -> str:
    return "[" + ", ".join(f"{e:.3g}" for e in v) + "]" if isinstance(v, list) else ""


def rebuild_errors_per_iteration(iterations: pd.DataFrame) -> Figure:
    """Per depth, each hidden layer's rebuild error (the next layer's pre-activations on held-out rows) and the
    network output's, against the iteration that began from the rebuild; log scale."""
    depths = sorted(iterations["depth"].unique())
    fig, axes = _grid(len(depths), ncols=min(3, len(depths)), size=(4.4, 3.4))
    for ax, depth in zip(axes, depths):
        part = iterations[iterations["depth"] == depth].sort_values("iteration")
        n = max(len(v) for v in part["rebuild_error"])
        for layer, colour in zip(range(n), _colours(n)):
            y = np.array([v[layer] if layer < len(v) else np.nan for v in part["rebuild_error"]], dtype=float)
            y[y < FLOOR] = np.nan
            ax.plot(part["iteration"], y, "o-", color=colour, label=f"{_layer_name(layer, n + 1)} (into the next layer)")
        out = part["rebuild_output_error"].astype(float).to_numpy().copy()
        out[out < FLOOR] = np.nan
        # hollow and larger, so that a layer whose error equals the output's (the last shrink's) shows inside it
        ax.plot(part["iteration"], out, "s--", color="black", mfc="none", ms=10, mew=1.3, zorder=1,
                label="network output (logits)")
        if np.isfinite(out).any() or any(np.isfinite(line.get_ydata()).any() for line in ax.lines):
            ax.set_yscale("log")
            _plain_log_y(ax)
        ax.set_title(f"depth {depth}", fontsize=10)
        ax.set_xlabel("iteration (begun from the rebuild)")
        _whole_numbers(ax.xaxis)
        ax.set_ylabel("relative error on held-out rows")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    return fig


def _table(iterations: pd.DataFrame, measure: str) -> pd.DataFrame:
    rows = []
    key = f"heldout_activation_rank_{measure}"
    for depth, part in iterations.sort_values(["depth", "iteration"]).groupby("depth"):
        previous = None
        for r in part.to_dict("records"):
            if isinstance(r.get("rebuild_error"), list) and previous is not None:
                rows.append({
                    "depth": depth, "iteration": r["iteration"],
                    "widths: before -> after": f"{_list(previous['widths'])} -> {_list(r['widths'])}",
                    f"activation rank ({measure}) before, held out": _list(previous.get(key)),
                    "rebuild error per layer": _errors(r["rebuild_error"]),
                    "output error": f"{r['rebuild_output_error']:.3g}",
                    "val acc %: before -> right after": f"{_pct(r.get('val_acc_before_rebuild'))} -> "
                                                       f"{_pct(r.get('val_acc_after_rebuild'))}",
                })
            previous = r
    return pd.DataFrame(rows)


def rebuild_cost(doc: _Document, run: RunData) -> None:
    it = run.iterations
    if it.empty or "rebuild_error" not in it or not it["rebuild_error"].map(lambda v: isinstance(v, list)).any():
        return
    rebuilt = it[it["rebuild_error"].map(lambda v: isinstance(v, list))]
    doc.add("## What each warm rebuild cost in function", "",
            "The warm rebuild keeps, in each hidden layer, the units whose outputs best span the layer's activations on "
            "a sample of training rows, and folds the others into the next layer. Its cost is measured on held-out rows "
            "the decomposition never saw (the validation inputs): per layer, the relative error "
            "||A' - A|| / ||A|| of the next layer's pre-activations A caused by that layer's own shrink (the earlier "
            "layers already shrunk), and the same for the network's output. The held-out activation rank is that of "
            "the network the rebuild started from, at the driving measure: a width below it drops directions its "
            "outputs use.", "")
    recentred = "output_recentred" in it and it["output_recentred"].eq(True).any()
    if recentred:
        doc.add(f"**Output scaling (--alpha {run.config.get('model', {}).get('alpha')}):** the rebuild keeps the network "
                "f, and these errors are f's; but every shrink iteration after the first re-centres the scaled output "
                "alpha (f - f_0) on the rebuilt network (f_0 = where that iteration starts), so the output it trains "
                "from restarts at zero (`output_recentred` in its row) and its accuracy right after the rebuild is a "
                "zero output's.", "")
    doc.figure("rebuild-error", lambda: rebuild_errors_per_iteration(rebuilt),
               "warm rebuild's reconstruction error per layer across iterations",
               "Relative error, on held-out rows, of the pre-activations each hidden layer's shrink leaves the next layer "
               "(a colour per layer), and of the network's output (black, dashed), at each iteration that began from a "
               "warm rebuild; log scale (a layer that kept all its units loses nothing and is not drawn). Look for "
               "errors that stay small while the widths fall: the rebuild kept the function; a jump marks a shrink that "
               "cut directions the network used.")
    doc.table(_table(it, run.measure))
