"""Reports: a run folder or an Optuna study -> a Markdown file with PNG figures.

    DIR/report.md          the report; every figure is linked by its relative path
    DIR/figures/*.png      the figures (matplotlib, rendered headless by Agg)

A run folder (a folder holding config.json) is read as it stands: a run still being written, one
that was interrupted, or one that never got past its config renders what is there, and the report
says what is missing. A study is read from its storage; each finished trial's own run folder can
be reported on its own.

Never imports rankprune.train (imports point one way: report -> runfolder/classes/study/config).
"""

from __future__ import annotations

import math
import re
import sys
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from rankprune import figures
from rankprune.config import ConfigError, RunConfig
from rankprune.runfolder import (
    CONFIG, DATA, DEPTHS, ENVIRONMENT, EPOCHS, ITERATIONS, SPECTRA, STATUS, RunFolder, write_text_atomic,
)
from rankprune.units import TFLOP, tflop

__all__ = [
    "REPORT", "FIGURES", "PUBLISHED", "Published", "TrainingData", "render", "render_run", "render_study",
    "training_data",
]

REPORT = "report.md"
FIGURES = "figures"
FULL_MNIST_TRAIN = 60_000  # images in MNIST's training set; the published networks trained on all of them
DIGITS_IMAGES = 1_797  # scikit-learn's load_digits (a constant here: importing scikit-learn costs seconds)


# Units of the metrics a study can optimise (study.METRICS), for axis labels.
METRIC_UNITS = {
    "test_acc": "fraction correct", "val_acc": "fraction correct", "train_acc": "fraction correct",
    "test_loss": "cross-entropy, nats", "train_loss": "cross-entropy, nats",
    "generalisation_gap": "train - test accuracy, fraction", "network_rank_sum": "singular directions",
    "network_rank_normalized": "rank / hidden width", "network_rank_min": "singular directions",
    "rank_parameters": "count", "parameters": "count", "cumulative_seconds": "s", "cumulative_flops": "FLOPs",
    "epochs": "count",
}


def _metric_label(name: str) -> str:
    return f"{name} ({METRIC_UNITS[name]})" if name in METRIC_UNITS else name


@dataclass(frozen=True)
class Published:
    network: str
    parameters: int
    error: float  # test error on MNIST's 10,000 test images, %
    pruning: str
    source: str
    approximate: bool = False


# Han, Pool, Tran, Dally (2015), "Learning both Weights and Connections for Efficient Neural Networks",
# NeurIPS, Table 1: LeNet-300-100 (LeCun et al. 1998: 784-300-100-10, 266,610 weights and biases).
PUBLISHED = (
    Published("LeNet-300-100 (784-300-100-10, dense)", 266_610, 1.64, "none",
              "LeCun et al. 1998; error as trained in Han et al. 2015, Table 1"),
    Published("LeNet-300-100, pruned", 22_000, 1.59, "unstructured (single weights), 12x fewer",
              "Han et al. 2015, Table 1", approximate=True),
)


# --- formatting ------------------------------------------------------------------------------------
def _absent(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _num(v: Any) -> str:
    """Whole numbers as integers, others to 3 significant digits; '' when absent."""
    if _absent(v):
        return ""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _list(v: Any) -> str:
    # a diverged network's ranks are NaN, stored as null
    return "[" + ", ".join(_num(x) or "nan" for x in v) + "]" if isinstance(v, (list, tuple)) else ""


def _pct(v: Any) -> str:
    """An accuracy (a fraction) as a percentage with 2 decimals."""
    return "" if _absent(v) else f"{100 * v:.2f}"


def _count(v: Any) -> str:
    return "" if _absent(v) else f"{int(v):,}"


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(exc).__name__}: {first[:240]}" if first else type(exc).__name__


def _md_table(df: pd.DataFrame) -> str:
    # Every cell is formatted text already; tabulate must not re-parse "1,135" or "93.75".
    return df.to_markdown(index=False, disable_numparse=True)



class _Document:
    """Markdown lines and the figures written for them; `write` puts report.md in place last."""

    def __init__(self, out: Path):
        self.out = out
        self.lines: list[str] = []
        self.figures: list[Path] = []

    def add(self, *lines: str) -> None:
        self.lines.extend(lines)

    def table(self, df: pd.DataFrame) -> None:
        self.add(_md_table(df), "")

    def bullets(self, items: list[str]) -> None:
        self.add(*(f"- {item}" for item in items), "")

    def figure(self, name: str, draw: Callable[[], Any], alt: str, caption: str) -> bool:
        """Draw, save as figures/NAME.png and link it; a figure that cannot be drawn is a note saying why."""
        path = self.out / FIGURES / f"{name}.png"
        try:
            figures.save(draw(), path)
        except Exception as exc:
            self.add(f"*Figure not drawn ({alt}): {_reason(exc)}.*", "")
            return False
        self.figures.append(path)
        self.add(f"![{alt}]({FIGURES}/{name}.png)", "", f"*{caption}*", "")
        return True

    def write(self) -> Path:
        path = self.out / REPORT
        earlier = _linked_figures(path)
        write_text_atomic(path, "\n".join(self.lines).rstrip() + "\n")
        # Figures the earlier report drew and this one did not would be stale: remove them, and only
        # them. Anything else in figures/ (a user's own file) was never ours to delete.
        for old in earlier - {p.name for p in self.figures}:
            (self.out / FIGURES / old).unlink(missing_ok=True)
        return path


_FIGURE_LINK = re.compile(rf"\]\({FIGURES}/([A-Za-z0-9_.-]+\.png)\)")


def _linked_figures(report: Path) -> set[str]:
    """The figure files a report.md links (what an earlier rankprune report wrote into figures/)."""
    try:
        return set(_FIGURE_LINK.findall(report.read_text()))
    except (OSError, UnicodeDecodeError):
        return set()


def _check_out(out: Path) -> None:
    """A report goes into a new or empty folder, or over an earlier rankprune report; never into a folder of
    other files (it would mix with them, and stale-figure clean-up must not touch what is not ours)."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / REPORT).is_file():
        raise ConfigError(f"{out} holds other files and no {REPORT}: give an empty or new folder with --out")


# --- the training data, against published MNIST figures ----------------------------------------------
@dataclass(frozen=True)
class TrainingData:
    note: str  # one sentence for the report
    comparable: bool  # the full MNIST training set: the published figures' footing
    images: int | None  # training images the network saw (after the train fraction and validation split)
    test_images: int | None


def _idx_count(path: Path) -> int | None:
    """The item count in an IDX file's header (bytes 4-8, big-endian), without reading the data."""
    try:
        with path.open("rb") as fh:
            header = fh.read(8)
    except OSError:
        return None
    return int.from_bytes(header[4:8], "big") if len(header) == 8 else None


_DATASET_NAMES = {"digits": "scikit-learn's 8x8 digits", "fashion-mnist": "Fashion-MNIST", "kmnist": "KMNIST", "mnist": "MNIST"}


def training_data(data: dict, described: dict | None = None) -> TrainingData:
    """What a run's data section trained on, and whether that is the published MNIST figures' footing.

    `described` is the run's data.json (split sizes recorded when it ran); runs from before it existed
    fall back to counting the dataset files' headers where they lie now.
    """
    dataset = data.get("dataset", "mnist")
    fraction, val_fraction = float(data.get("train_fraction", 1.0)), float(data.get("val_fraction", 0.1))
    name = _DATASET_NAMES.get(dataset, dataset)
    where = ""
    recorded = bool(described) and all(k in described for k in ("n_train", "n_val", "n_test", "n_train_pool"))
    if recorded:
        images, n_val, test, pool = (described[k] for k in ("n_train", "n_val", "n_test", "n_train_pool"))
    elif dataset == "digits":
        test = DIGITS_IMAGES // 5  # as data._digits_arrays splits it
        pool: int | None = DIGITS_IMAGES - test
    else:
        from rankprune.data import default_data_dir, expected_files

        root = Path(data["data_dir"]) if data.get("data_dir") else default_data_dir()
        raw, names = expected_files(dataset, root)
        where = str(raw)
        pool = _idx_count(raw / next(n for n in names if n.startswith("train-images")))
        test = _idx_count(raw / next(n for n in names if n.startswith("t10k-images")))
    if not recorded:
        images = n_val = None
    if pool is not None and not recorded:  # carved as data.load carves it
        used = max(2, round(fraction * pool))
        n_val = max(1, round(val_fraction * used))
        images = used - n_val
    part = f" (train fraction {fraction:g})" if fraction < 1 else ""

    if dataset != "mnist":
        seen = f"{images:,} images of {name}" if images is not None else name
        return TrainingData(f"trained on {seen}{part}, not MNIST: not directly comparable", False, images, test)
    if pool is None:
        return TrainingData(f"MNIST's files are not in {where} here, so whether the network trained on the full "
                            "60k training set cannot be checked: compare with care", False, None, test)
    if pool < FULL_MNIST_TRAIN:
        subset = f"a {(pool + test) / 1000:g}k MNIST subset" if test else f"a {pool:,}-image MNIST subset"
        return TrainingData(f"trained on {images:,} images{part} of {subset}, not the 60k training set: "
                            "not directly comparable", False, images, test)
    if fraction < 1:
        return TrainingData(f"trained on {images:,} images, a {fraction:g} fraction of the 60k MNIST training set: "
                            "not directly comparable", False, images, test)
    return TrainingData(f"trained on {images:,} of the 60,000 MNIST training images ({n_val:,} held out for "
                        "validation; the published networks trained on all 60,000)", True, images, test)


def _reference(doc: _Document, best: dict | None, data: dict | None, missing_data: str = "",
               described: dict | None = None) -> None:
    """The best MLP found beside LeNet-300-100 and its pruned version, with the training-data caveat."""
    doc.add("## Reference: the best MLP found beside published MNIST networks", "")
    rows = [{"network": p.network, "parameters": ("about " if p.approximate else "") + f"{p.parameters:,}",
             "test error (%)": f"{p.error:.2f}", "pruning": p.pruning, "source": p.source} for p in PUBLISHED]
    if best is not None:
        rows.append({"network": best["network"], "parameters": _count(best["parameters"]),
                     "test error (%)": f"{100 * (1 - best['test_acc']):.2f}", "pruning": best["pruning"],
                     "source": best["source"]})
    doc.table(pd.DataFrame(rows))
    if best is None:
        doc.add("*No finished network yet: nothing to compare.*", "")
    if data is None:
        doc.add(f"**Caveat:** {missing_data or 'the training data is unknown'}: compare with care.", "")
    else:
        try:
            td = training_data(data, described)
        except Exception as exc:  # a data folder we cannot inspect must not cost the whole report
            doc.add(f"**Caveat:** the training data could not be checked ({_reason(exc)}): compare with care.", "")
        else:
            tested = (f" Test error here is on {td.test_images:,} test images; the published on MNIST's 10,000."
                      if td.test_images and td.test_images != 10_000 else "")
            doc.add(f"**{'Note' if td.comparable else 'Caveat'}:** {td.note}.{tested}", "")
    doc.add("Han et al. remove single weights (unstructured: the matrices keep their shape and need sparse kernels "
            "to run faster); rank-pruning removes whole units (structured: a smaller dense network).", "")


# --- a run -----------------------------------------------------------------------------------------
def _read_config(run: RunFolder) -> dict:
    try:
        raw = run.read(CONFIG)
    except ValueError as exc:  # json.JSONDecodeError
        raise ConfigError(f"{run.path / CONFIG} is not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{run.path / CONFIG} is not a rankprune config (not a JSON object)")
    try:  # defaults filled in for settings added since the run was made
        return RunConfig.from_dict(raw).to_dict()
    except (ConfigError, TypeError) as exc:
        raise ConfigError(f"{run.path / CONFIG} is not a rankprune config ({exc})") from None


def _torn(run: RunFolder, table: str, parsed: int) -> int:
    """Lines of a table that are not JSON (a write killed midway); RunFolder.rows skips them."""
    p = run.path / table
    if not p.is_file():
        return 0
    return sum(1 for line in p.read_text().splitlines() if line.strip()) - parsed


def _where(status: dict) -> str:
    parts = [f"{k} {status[k]}" for k in ("depth", "iteration") if k in status]
    return f" at {', '.join(parts)}" if parts else ""


def _run_gaps(run: RunFolder, config: dict, status: dict | None, tables: dict[str, pd.DataFrame],
              depths: dict | None, torn: dict[str, int]) -> list[str]:
    """What a finished run has and this one lacks, one sentence each."""
    gaps = []
    state = (status or {}).get("state")
    if status is None:
        gaps.append(f"no {STATUS}: the controller has not started in this folder")
    elif state == "running":
        gaps.append(f"{STATUS} says running{_where(status)}: a snapshot of a run still being written "
                    "(or of one killed before it could record that)")
    elif state == "interrupted":
        gaps.append(f"the run was interrupted{_where(status)}; continue it with "
                    f"`rankprune evolve --out {run.path} --resume`")
    elif state == "failed":
        gaps.append(f"the run failed{_where(status)}: {status.get('error', 'no error recorded')}")
    elif state != "finished":
        gaps.append(f"{STATUS} holds an unknown state {state!r}")
    epochs, iterations, spectra = tables[EPOCHS], tables[ITERATIONS], tables[SPECTRA]
    if epochs.empty:
        gaps.append(f"no epochs yet ({EPOCHS} is missing or empty): no accuracy curves and no rank traces")
    if iterations.empty:
        gaps.append(f"no finished iteration yet ({ITERATIONS} is missing or empty): no iteration table")
    if spectra.empty:
        gaps.append(f"no spectra yet ({SPECTRA} is missing or empty): no singular-value plots")
    if depths is None:
        gaps.append(f"no {DEPTHS} yet: no depth has finished, so no depth has a chosen network")
    finished = set() if iterations.empty else set(zip(iterations["depth"], iterations["iteration"]))
    for depth in config.get("evolve", {}).get("layers", []):
        if str(depth) in (depths or {}):
            continue
        done = sorted(i for d, i in finished if d == depth)
        gaps.append(f"depth {depth} has not finished (" + (f"finished iterations: {', '.join(map(str, done))})" if done
                                                           else "no iteration finished)"))
    if not epochs.empty:
        for (depth, iteration), part in epochs.groupby(["depth", "iteration"]):
            if (depth, iteration) not in finished:
                gaps.append(f"depth {depth}, iteration {iteration}: {len(part)} epoch(s) recorded but the iteration "
                            "did not finish (its curves are drawn; a resume redoes it from its start)")
    for table, n in torn.items():
        if n:
            gaps.append(f"{table} ends in {n} torn line(s) (a write killed midway): ignored")
    return gaps


def _depth_table(depths: dict) -> pd.DataFrame:
    rows = []
    for key in sorted(depths, key=int):
        s = depths[key]
        shrink = s["initial_parameters"] / s["parameters"] if s.get("parameters") else float("nan")
        rows.append({
            "depth": key,
            "stop": s.get("stop_reason", ""),
            "iterations": _num(s.get("iterations")),
            "chosen": _num(s.get("chosen_iteration")),
            "widths: initial -> chosen": f"{_list(s.get('initial_widths'))} -> {_list(s.get('widths'))}",
            "parameters: initial -> chosen": f"{_count(s.get('initial_parameters'))} -> {_count(s.get('parameters'))} ({shrink:.1f}x fewer)",
            "test acc %: initial -> chosen": f"{_pct(s.get('initial_test_acc'))} -> {_pct(s.get('test_acc'))}",
            "gap (pp)": _pct(s.get("generalisation_gap")),
            f"ranks ({s.get('rank_measure', '?')})": _list(s.get("ranks")),
            "epochs": _num(s.get("epochs")),
            "cumulative train time (s)": f"{s.get('cumulative_seconds', float('nan')):.1f}",
            "cumulative compute (TFLOP)": tflop(s.get("cumulative_flops")),
        })
    return pd.DataFrame(rows)


def _iteration_table(iterations: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for r in iterations.sort_values(["depth", "iteration"]).to_dict("records"):
        rows.append({
            "depth": r["depth"], "iteration": r["iteration"], "phase": "" if _absent(r.get("phase")) else r["phase"],
            "widths": _list(r.get("widths")),
            "parameters": _count(r.get("parameters")), "weight decay": f"{r.get('weight_decay', float('nan')):.3g}",
            "epochs": _num(r.get("epochs")), "train stop": r.get("train_stop", ""),
            "train acc %": _pct(r.get("train_acc")), "val acc %": _pct(r.get("val_acc")),
            "test acc %": _pct(r.get("test_acc")), "gap (pp)": _pct(r.get("generalisation_gap")),
            "test acc % after rebuild": _pct(r.get("test_acc_after_rebuild")),
            f"ranks ({r.get('rank_measure', '?')})": _list(r.get("ranks")), "next widths": _list(r.get("next_widths")),
            "stop": "" if _absent(r.get("stop")) else r["stop"],
            "cumulative time (s)": f"{r.get('cumulative_seconds', float('nan')):.2f}",
        })
    table = pd.DataFrame(rows)
    return table if (table["phase"] != "").any() else table.drop(columns="phase")  # runs from before phases


def _config_table(config: dict) -> pd.DataFrame:
    rows = []
    for key, value in config.items():
        if isinstance(value, dict):
            rows += [{"setting": f"{key}.{k}", "value": _list(v) if isinstance(v, list) else str(v)} for k, v in value.items()]
        else:
            rows.append({"setting": key, "value": str(value)})
    return pd.DataFrame(rows)


def _provenance(env: dict | None) -> str:
    if not env:
        return f"No {ENVIRONMENT}: versions and git revision unknown."
    v = env.get("versions", {})
    parts = [f"created {env.get('created', '?')}", f"git {env.get('git_revision') or 'unknown'}",
             f"python {v.get('python', '?')}", f"torch {v.get('torch', '?')}", f"optuna {v.get('optuna', '?')}",
             f"device {env.get('device', '?')} ({env.get('device_name', '?')})"]
    if env.get("resumed"):
        parts.append(f"resumed {len(env['resumed'])} time(s)")
    return "Provenance: " + "; ".join(parts) + "."


def _driving_rtol(spec: str) -> float | None:
    from rankprune.rank import parse_measure

    try:
        m = parse_measure(spec)
    except ValueError:
        return None
    return m.param if m.name == "numerical" else None


def _how_shrunk(initial_parameters: float, parameters: float, iterations: float) -> str:
    """What the reference table says of a network: rank-pruned only if the controller shrank it."""
    if iterations is not None and iterations <= 1 or initial_parameters == parameters:
        return "none: trained once at its initial widths (not shrunk)"
    return f"rank-pruned (structured: whole units), {initial_parameters / parameters:.1f}x fewer than its start ({int(initial_parameters):,})"


def _best_of_run(depths: dict | None, iterations: pd.DataFrame) -> dict | None:
    """The chosen network with the highest *validation* accuracy (as every decision is made), reported with
    its test accuracy; without a finished depth, the finished iteration with the highest validation accuracy."""
    if depths:
        s = max(depths.values(), key=lambda s: s["val_acc"])
        return {"network": f"this run: depth {s['depth']}, widths {_list(s['widths'])} (chosen iteration "
                           f"{s['chosen_iteration']}; best validation accuracy of the depths)",
                "parameters": s["parameters"], "test_acc": s["test_acc"], "source": "this run",
                "pruning": _how_shrunk(s["initial_parameters"], s["parameters"], s.get("iterations"))}
    if iterations.empty:
        return None
    r = iterations.loc[iterations["val_acc"].idxmax()]
    first = iterations[iterations["depth"] == r["depth"]]["parameters"].iloc[0]
    return {"network": f"this run: depth {r['depth']}, widths {_list(r['widths'])} (iteration {r['iteration']}, best "
                       "validation accuracy; no depth has finished)", "parameters": r["parameters"], "test_acc": r["test_acc"],
            "source": "this run", "pruning": _how_shrunk(first, r["parameters"], r["iteration"] + 1)}


def _widths_frame(epochs: pd.DataFrame, iterations: pd.DataFrame) -> pd.DataFrame:
    """(depth, iteration, widths, ranks) for finished iterations and, ranks None, one still running."""
    rows = [] if iterations.empty else iterations[["depth", "iteration", "widths", "ranks"]].to_dict("records")
    seen = {(r["depth"], r["iteration"]) for r in rows}
    if not epochs.empty:
        for r in epochs.drop_duplicates(["depth", "iteration"]).to_dict("records"):
            if (r["depth"], r["iteration"]) not in seen:
                rows.append({"depth": r["depth"], "iteration": r["iteration"], "widths": r["widths"], "ranks": None})
    return pd.DataFrame(rows)


def render_run(run: RunFolder, out: Path) -> Path:
    """Write the report of a run folder to out/report.md (figures in out/figures); return its path."""
    config = _read_config(run)
    status, env = run.read(STATUS), run.read(ENVIRONMENT)
    try:
        depths = run.read(DEPTHS)
    except ValueError:  # written atomically, so only a hand-edit breaks it
        depths = None
    raw = {t: run.rows(t) for t in (EPOCHS, ITERATIONS, SPECTRA)}
    tables = {t: pd.DataFrame(rows) for t, rows in raw.items()}
    torn = {t: _torn(run, t, len(rows)) for t, rows in raw.items()}
    epochs, iterations, spectra = tables[EPOCHS], tables[ITERATIONS], tables[SPECTRA]
    drive = config.get("rank", {}).get("measure", "?")

    doc = _Document(out)
    doc.add(f"# Run report: `{run.path}`", "")
    state = (status or {}).get("state", "not started")
    data = config.get("data", {})
    doc.add(f"**State:** {state}{_where(status or {})}. Dataset {data.get('dataset', '?')}, depths "
            f"{_list(config.get('evolve', {}).get('layers', []))}, initial width {config.get('model', {}).get('width', '?')}, "
            f"rank measure `{drive}`, seed {config.get('seed', '?')}.", "")
    gaps = _run_gaps(run, config, status, tables, depths, torn)
    if gaps:
        doc.add("## What is missing", "")
        doc.bullets(gaps)

    if depths:
        doc.add("## Depths: the chosen network of each", "",
                "The chosen iteration is the one the controller reports for the depth (the last whose validation "
                "accuracy is within max_drop of the best, or the anneal iteration that finishes it); accuracies are "
                "on the test split, gap = training minus test accuracy (percentage points).", "")
        doc.table(_depth_table(depths))

    try:
        described = run.read(DATA)
    except ValueError:
        described = None
    _reference(doc, _best_of_run(depths, iterations), data, described=described if isinstance(described, dict) else None)

    if not epochs.empty:
        doc.add("## Accuracy against training cost", "")
        for x, scale, name, label, cost in (
            ("cumulative_seconds", 1.0, "accuracy-seconds", "cumulative training time (s)", "training time"),
            ("cumulative_flops", 1 / TFLOP, "accuracy-flops", "cumulative training compute (TFLOP)",
             "compute (a machine-independent cost)"),
        ):
            doc.figure(name, lambda x=x, scale=scale, label=label: figures.accuracy_curves(epochs, iterations, x, label, scale),
                       f"test accuracy against {cost}",
                       f"Test accuracy per epoch against cumulative {cost}; a colour, line style and marker per depth. "
                       "A filled marker ends each iteration (its number beside it); a hollow one is the accuracy right "
                       "after its rebuild, and a hollow triangle at the bottom edge one below the axis, with its value. "
                       "Look for end markers that stay level while each iteration costs less: the narrower network "
                       "holds accuracy.")

    widths = _widths_frame(epochs, iterations)
    if not widths.empty:
        doc.add("## Widths per iteration", "")
        doc.figure("widths", lambda: figures.widths_per_iteration(widths), "hidden-layer widths per iteration",
                   f"Width of each hidden layer per iteration (solid) and its rank `{drive}` measured at saturation "
                   "(dotted), which sets the next width. Look for the lines meeting and flattening: a fixed point.")

    measures = [c.removeprefix("rank_") for c in epochs.columns if c.startswith("rank_")]
    if measures:
        doc.add("## Rank measures across epochs", "")
        for depth in sorted(epochs["depth"].unique()):
            part = epochs[epochs["depth"] == depth]
            doc.figure(f"ranks-depth-{depth}", lambda part=part: figures.ranks_across_epochs(part, measures, drive),
                       f"rank measures per layer across epochs, depth {depth}",
                       f"Depth {depth}: every rank measure of each weight matrix per epoch, each panel on its own scale "
                       "(dashed: the layer's width, where it fits the panel's scale; dotted verticals: an iteration "
                       "begins). Look for ranks that settle before the iteration ends, and for how far the measures "
                       "disagree.")

    if not spectra.empty:
        doc.add("## Singular-value spectra per iteration", "")
        rtol = _driving_rtol(drive)
        for depth in sorted(spectra["depth"].unique()):
            part = spectra[spectra["depth"] == depth]
            doc.figure(f"spectra-depth-{depth}", lambda part=part: figures.spectra_per_iteration(part, rtol),
                       f"singular-value spectra per iteration, depth {depth}",
                       f"Depth {depth}: singular values of each weight matrix at the end of each iteration, relative "
                       "to the largest (dark: early, light: late)." + (
                           f" Look for the knee: values under the red line (rtol {rtol:g}) are what the numerical rank cuts."
                           if rtol is not None else " Look for the knee where the spectrum drops: the directions a layer uses."))

    if not iterations.empty:
        doc.add("## Iterations", "")
        doc.table(_iteration_table(iterations))

    doc.add("## Configuration", "", _provenance(env), "")
    doc.table(_config_table(config))
    return doc.write()


# --- a study ---------------------------------------------------------------------------------------
def _trial_table(df: pd.DataFrame, classes: pd.Series) -> pd.DataFrame:
    params = [c for c in df.columns if c.startswith("param_") and c not in ("param_depth", "param_width", "param_width_profile")]
    rows = []
    for (_, r), cid in zip(df.iterrows(), classes):
        rows.append({
            "trial": r["number"], "class": cid, "initial widths": _list(r["initial_widths"]), "widths": _list(r["widths"]),
            "rank measure": r["rank_measure"], "ranks": _list(r["ranks"]), "rank sum": _num(r["network_rank_sum"]),
            "rank / width": f"{r['network_rank_normalized']:.3f}", "parameters": _count(r["parameters"]),
            "train acc %": _pct(r["train_acc"]), "test acc %": _pct(r["test_acc"]), "gap (pp)": _pct(r["generalisation_gap"]),
            **{c.removeprefix("param_"): _num(r[c]) for c in params},
            "iterations": _num(r["iterations"]), "stop": r["stop_reason"],
            "cumulative time (s)": f"{r['cumulative_seconds']:.1f}",
        })
    return pd.DataFrame(rows)


def _best_of_study(df: pd.DataFrame, mode: str) -> tuple[dict | None, dict | None, dict | None, str]:
    """The finished trial with the highest validation accuracy (reported with its test accuracy), and its run
    folder's data section and data.json."""
    if df.empty:
        return None, None, None, ""
    r = df.loc[df["val_acc"].idxmax()]
    shrunk = mode != "survey" and list(r["widths"]) != list(r["initial_widths"])
    best = {"network": f"trial #{r['number']}: depth {r['depth']}, widths {_list(r['widths'])} (best validation accuracy)",
            "parameters": r["parameters"], "test_acc": r["test_acc"], "source": "this study",
            "pruning": f"rank-pruned (structured: whole units) from {_list(r['initial_widths'])}" if shrunk else
            "none: trained once at its initial widths (a survey trial, not shrunk)" if mode == "survey" else
            "none: the controller kept its initial widths"}
    folder = RunFolder(r.get("run_folder", ""))
    try:
        config, described = folder.read(CONFIG), folder.read(DATA)
    except ValueError:
        config, described = None, None
    if not isinstance(config, dict):
        return best, None, None, f"the trial's run folder {folder.path} is not here, so its training data cannot be checked"
    return best, config.get("data", {}), described, ""


def _optuna_plots(doc: _Document, study, complete: list) -> None:
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:  # headless; never switch a backend the caller chose
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    before = set(plt.get_fignums())  # Optuna draws with pyplot: close what it opens, drawn or not
    try:
        _optuna_figures(doc, study, complete)
    finally:
        for number in set(plt.get_fignums()) - before:
            plt.close(number)


def _optuna_figures(doc: _Document, study, complete: list) -> None:
    import optuna
    from optuna.visualization import matplotlib as om

    def plot(name: str, make: Callable[[], Any], alt: str, caption: str, *labels: str | None, integer_x: bool = False):
        doc.figure(name, lambda: figures.optuna_figure(make(), *labels, integer_x=integer_x), alt, caption)

    names = list(study.metric_names or [f"objective {i}" for i in range(len(study.directions))])
    doc.add("## Optuna's plots", "")
    if not complete:
        doc.add("*No completed trial: Optuna has nothing to plot.*", "")
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if len(names) == 1:
            plot("optuna-history", lambda: om.plot_optimization_history(study, target_name=names[0]),
                 f"Optuna optimisation history of {names[0]}",
                 f"{names[0]} of each trial and the best so far, by trial number. Look for the best value "
                 "levelling off: more trials would buy little.", "trial number", _metric_label(names[0]), integer_x=True)
        else:
            for i, name in enumerate(names):
                plot(f"optuna-history-{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}",
                     lambda i=i, name=name: om.plot_optimization_history(study, target=lambda t: t.values[i], target_name=name),
                     f"Optuna optimisation history of {name}",
                     f"{name} ({study.directions[i].name.lower()}d) of each trial, by trial number. Look for whether "
                     "later trials (the sampler's informed guesses) do better than the first.",
                     "trial number", _metric_label(name), integer_x=True)
            plot("optuna-pareto", lambda: om.plot_pareto_front(study, target_names=names), "Optuna Pareto front",
                 f"Each trial by {' and '.join(names)}; highlighted: the Pareto front. Look for the trade-off along "
                 "the front: what one objective costs in the other.",
                 *(map(_metric_label, names) if len(names) == 2 else ()))
        varying = [k for k in {k for t in complete for k in t.params} if len({repr(t.params.get(k)) for t in complete}) > 1]
        if len(complete) >= 2 and varying:
            # fANOVA, seeded: Optuna 5's default (PED-ANOVA) ranks parameters by how they reach *low*
            # values, which misreads a maximised objective such as test accuracy.
            evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
            plot("optuna-importances", lambda: om.plot_param_importances(study, evaluator=evaluator),
                 "Optuna hyperparameter importances",
                 "How much of each objective's variance each sampled parameter explains (fANOVA). Look for the "
                 "parameter that moves the objective; with few trials this is a rough guide.",
                 "importance: share of the objective's variance explained (fANOVA; sums to 1)", "sampled parameter")
        else:
            doc.add(f"*Figure not drawn (hyperparameter importances): needs at least 2 completed trials whose "
                    f"parameters vary; this study has {len(complete)} completed, {len(varying)} varying parameter(s).*", "")


def render_study(study, out: Path, storage: str) -> Path:
    """Write the report of an Optuna study to out/report.md (figures in out/figures); return its path."""
    import optuna

    from rankprune.classes import class_table, equivalence_classes, rank_trends, trials_frame
    from rankprune.study import _redact

    trials = study.get_trials(deepcopy=False)
    states = Counter(t.state.name.lower() for t in trials)
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    df = trials_frame(study)
    names = list(study.metric_names or [f"objective {i}" for i in range(len(study.directions))])
    mode = study.user_attrs.get("mode", "?")

    doc = _Document(out)
    doc.add(f"# Study report: `{study.study_name}`", "")
    objectives = ", ".join(f"{n} ({d.name.lower()})" for n, d in zip(names, study.directions))
    doc.add(f"**Storage:** `{_redact(storage)}`. Mode {study.user_attrs.get('mode', '?')}; objectives: {objectives}. "
            f"Trials: {len(trials)} in all ({', '.join(f'{n} {s}' for s, n in sorted(states.items())) or 'none'}).", "")
    gaps = []
    if not trials:
        gaps.append("no trials yet")
    elif df.empty:
        gaps.append("no finished trial yet: no rank figures, no classes")
    if states.get("running"):
        gaps.append(f"{states['running']} trial(s) still running (or killed without a heartbeat): a snapshot")
    repeats = df.attrs.get("repeats", {})
    if repeats:
        gaps.append(f"{len(repeats)} completed trial(s) repeat an earlier trial's parameters and are counted once: "
                    + ", ".join(f"#{a} (= #{b})" for a, b in sorted(repeats.items())))
    if len(df) + len(repeats) < len(complete):
        gaps.append(f"{len(complete) - len(df) - len(repeats)} completed trial(s) lack the rank attributes: left out of the rank figures")
    if gaps:
        doc.add("## What is missing", "")
        doc.bullets(gaps)

    if not df.empty:
        classes = equivalence_classes(df, "vector", 0.0)
        table = class_table(df, "vector", 0.0)
        signatures = dict(zip(table["class"], table["signature"]))
        ranks_are = ("measured ranks at saturation (a survey: each network trained once, never shrunk)" if mode == "survey"
                     else "convergent ranks (where the controller stopped)")
        doc.add("## Network rank against accuracy and generalisation", "",
                f"Network rank: the sum of the hidden layers' {ranks_are}. Equivalence class: trials whose "
                "per-layer ranks are equal (same depth, tolerance 0; `rankprune study classes` takes others).", "")
        doc.figure("rank-vs-test-acc", lambda: figures.rank_scatter(df, classes, signatures, "test_acc", "test accuracy (%)"),
                   "network rank against test accuracy",
                   "Each trial's network rank against its test accuracy, coloured by equivalence class. Look for "
                   "whether more rank buys accuracy, and whether a class shares an accuracy.")
        doc.figure("rank-vs-gap", lambda: figures.rank_scatter(df, classes, signatures, "generalisation_gap",
                                                               "generalisation gap: train - test accuracy (pp)"),
                   "network rank against the generalisation gap",
                   "Each trial's network rank against its generalisation gap, coloured by equivalence class. Look for "
                   "a rising trend: higher-rank networks overfitting more.")
        doc.add("## Equivalence classes of measured rank" if mode == "survey" else "## Equivalence classes of convergent rank", "")
        shown = table.assign(test_acc_mean=table["test_acc_mean"].map(_pct), test_acc_std=table["test_acc_std"].map(_pct))
        doc.table(shown.rename(columns={"test_acc_mean": "test acc % (mean)", "test_acc_std": "test acc (sd, pp)"}).astype(str))
        trends = rank_trends(df)
        doc.add("## Rank trends", "", "Spearman correlation of the network rank with each outcome (nan: too few trials "
                "or no spread).", "")
        doc.table(trends.assign(spearman_rho=trends["spearman_rho"].map(lambda v: f"{v:.3f}"),
                                p_value=trends["p_value"].map(lambda v: f"{v:.3g}")).astype(str))

    best, data, described, why = _best_of_study(df, mode)
    _reference(doc, best, data, why, described)
    _optuna_plots(doc, study, complete)

    if not df.empty:
        doc.add("## Trials", "", "Each finished trial's run folder holds its epochs and spectra: "
                "`rankprune report RUN_FOLDER` draws them.", "")
        doc.table(_trial_table(df, classes))
    failed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    if failed:
        doc.add("## Failed trials", "")
        doc.table(pd.DataFrame([{"trial": str(t.number), "reason": t.user_attrs.get("fail_reason", "not recorded")} for t in failed]))
    return doc.write()


# --- which: a run or a study ------------------------------------------------------------------------
def render(target: str | Path, out: str | Path | None = None, *, storage: str | None = None,
           root: str | Path = "runs") -> Path:
    """Report on `target`: a run folder if it is a folder holding config.json, else a study of that name in
    `storage` (default: the SQLite file under `root`). Default out: TARGET/report for a run, ROOT/reports/NAME
    for a study. Returns the path of report.md; anything that is neither is a one-line ConfigError."""
    if out is not None:
        _check_out(Path(out))
    path = Path(target)
    if (path / CONFIG).is_file():
        if storage is not None:
            raise ConfigError(f"{path} is a run folder; --storage applies to a study name")
        out = Path(out) if out is not None else path / "report"
        _check_out(out)
        return render_run(RunFolder(path), out)

    name = str(target)
    not_run = f"{name} is not a run folder (" + (f"it holds no {CONFIG})" if path.is_dir() else
                                                  "not a folder)" if path.exists() else "no such folder)")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ConfigError(not_run)
    from rankprune.study import default_storage, load_study

    url = storage or default_storage(root)
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        # open_storage would create an empty database; a report must not
        raise ConfigError(f"{not_run} and no study storage is at {url.removeprefix('sqlite:///')}; "
                          "for a study pass --storage URL or --root")
    try:
        study = load_study(name, url, read_only=True)
    except ConfigError as exc:
        raise ConfigError(f"{not_run} nor a study: {exc}") from None
    out = Path(out) if out is not None else Path(root) / "reports" / name
    _check_out(out)
    return render_study(study, out, url)
