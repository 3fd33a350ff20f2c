"""The report of one run folder: one function per section, in the order the report shows them.

Each section takes the document and the RunData gathered before it, and adds nothing when it has
nothing to show (the "What is missing" section says why).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from rankprune import figures
from rankprune.report import dynamics, tasks
from rankprune.report.rebuild import rebuild_cost
from rankprune.report.document import _absent, _count, _Document, _list, _num, _pct, _seconds
from rankprune.report.gather import RunData, read_run, widths_censored
from rankprune.report.reference import _reference
from rankprune.runfolder import DEPTHS, ENVIRONMENT, EPOCHS, ITERATIONS, SPECTRA, STATUS, RunFolder
from rankprune.config import task_knobs
from rankprune.regression import is_regression
from rankprune.models import FAMILIES
from rankprune.units import TFLOP, bound_note, sides_of, tflop, widths_text


def _where(status: dict) -> str:
    parts = [f"{k} {status[k]}" for k in ("depth", "iteration") if k in status]
    return f" at {', '.join(parts)}" if parts else ""


# --- header and what is missing --------------------------------------------------------------------
def _header(doc: _Document, run: RunData) -> None:
    doc.add(f"# Run report: `{run.path}`", "")
    state = (run.status or {}).get("state", "not started")
    config, data = run.config, run.data
    doc.add(f"**State:** {state}{_where(run.status or {})}. Dataset {data.get('dataset', '?')}, depths "
            f"{_list(config.get('evolve', {}).get('layers', []))}, initial width {config.get('model', {}).get('width', '?')}, "
            f"rank measure `{run.measure}`, seed {config.get('seed', '?')}.{_task(config)}", "")


def _task(config: dict) -> str:
    """The task and its training budget, as a sentence."""
    regression = is_regression(config.get("data", {}).get("dataset", ""))
    return (" Task: " + ", ".join(task_knobs(config)) + "."
            + (" **A regression task: every accuracy in this report is R^2** (x100 where shown as %)." if regression else ""))


def _run_gaps(run: RunData) -> list[str]:
    """What a finished run has and this one lacks, one sentence each."""
    gaps = []
    status = run.status
    state = (status or {}).get("state")
    if status is None:
        gaps.append(f"no {STATUS}: the controller has not started in this folder")
    elif state == "running" and status.get("writer") is None:
        gaps.append(f"{STATUS} says running{_where(status)}, but no process holds the folder's lock: the run was "
                    "killed before it could record that (SIGKILL, a crash); continue it with "
                    f"`rankprune evolve --out {run.path} --resume`")
    elif state == "running":
        gaps.append(f"{STATUS} says running{_where(status)}: a snapshot of a run still being written by "
                    f"{status['writer']}")
    elif state == "interrupted":
        gaps.append(f"the run was interrupted{_where(status)}; continue it with "
                    f"`rankprune evolve --out {run.path} --resume`")
    elif state == "failed":
        gaps.append(f"the run failed{_where(status)}: {status.get('error', 'no error recorded')}")
    elif state != "finished":
        gaps.append(f"{STATUS} holds an unknown state {state!r}")
    epochs, iterations, depths = run.epochs, run.iterations, run.depths
    if epochs.empty:
        gaps.append(f"no epochs yet ({EPOCHS} is missing or empty): no accuracy curves and no rank traces")
    if iterations.empty:
        gaps.append(f"no finished iteration yet ({ITERATIONS} is missing or empty): no iteration table")
    if run.spectra.empty:
        gaps.append(f"no spectra yet ({SPECTRA} is missing or empty): no singular-value plots")
    if depths is None:
        gaps.append(f"no {DEPTHS} yet: no depth has finished, so no depth has a chosen network")
    finished = set() if iterations.empty else set(zip(iterations["depth"], iterations["iteration"]))
    for depth in run.config.get("evolve", {}).get("layers", []):
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
    for table, n in run.torn.items():
        if n:
            gaps.append(f"{table} ends in {n} torn line(s) (a write killed midway): ignored")
    return gaps


def _missing(doc: _Document, run: RunData) -> None:
    gaps = _run_gaps(run)
    if gaps:
        doc.add("## What is missing", "")
        doc.bullets(gaps)


# --- depths and the reference ----------------------------------------------------------------------
def _first_to_chosen(s: dict) -> str:
    """Initial -> chosen test accuracy; where the first iteration stopped at its first plateau (a warm run), the
    full-width network annealed as the chosen one is (the reference) beside it, the fair comparison."""
    first = _pct(s.get("initial_test_acc"))
    if s.get("reference_test_acc") is not None:
        first += f" (annealed {_pct(s['reference_test_acc'])})"
    return f"{first} -> {_pct(s.get('test_acc'))}"


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
            "widths: initial -> chosen": f"{_list(s.get('initial_widths'))} -> {widths_text(s.get('widths') or [], s.get('censored'))}",
            "parameters: initial -> chosen": f"{_count(s.get('initial_parameters'))} -> {_count(s.get('parameters'))} ({shrink:.1f}x fewer)",
            "test acc %: initial -> chosen": _first_to_chosen(s),
            "gap (pp)": _pct(s.get("generalisation_gap")),
            f"ranks ({s.get('rank_measure', '?')})": _list(s.get("ranks")),
            "epochs": _num(s.get("epochs")),
            "cumulative train time (s)": _seconds(s.get("cumulative_seconds")),
            "cumulative compute (TFLOP)": tflop(s.get("cumulative_flops")),
        })
        if any(d.get("scratch_test_acc") is not None for d in depths.values()):  # --scratch (evolve/scratch.py)
            rows[-1]["test acc % from scratch, same FLOPs"] = (
                "" if s.get("scratch_test_acc") is None else
                f"{_pct(s['scratch_test_acc'])} ({_num(s.get('scratch_epochs'))} epochs"
                + (", capped)" if s.get("scratch_capped") else ")"))
    return pd.DataFrame(rows)


def _depths(doc: _Document, run: RunData) -> None:
    if run.depths:
        doc.add("## Depths: the chosen network of each", "",
                "The chosen iteration is the one the controller reports for the depth (the last whose validation "
                "accuracy is within max_drop of the best, or the anneal iteration that finishes it); accuracies are "
                "on the test split, gap = training minus test accuracy (percentage points)."
                + (" " + bound_note(sides_of([s.get("censored") for s in run.depths.values()]))).rstrip()
                + (" From scratch (--scratch): the chosen widths trained again from a fresh initialisation for the "
                   "depth's cumulative compute, as Liu et al. 2019's Scratch-B, and scored at the end of it."
                   if any(s.get("scratch_test_acc") is not None for s in run.depths.values()) else ""), "")
        doc.table(_depth_table(run.depths))





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
        return {"network": f"this run: depth {s['depth']}, widths {widths_text(s['widths'], s.get('censored'))} (chosen iteration "
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


def _run_reference(doc: _Document, run: RunData) -> None:
    if is_regression(run.data.get("dataset", "")):
        return  # the published reference is MNIST classification error: nothing to compare an R^2 with
    _reference(doc, _best_of_run(run.depths, run.iterations), run.data, described=run.described)


# --- figures ---------------------------------------------------------------------------------------
def _accuracy(doc: _Document, run: RunData) -> None:
    if run.epochs.empty:
        return
    metric = run.metric.text
    doc.add("## Accuracy against training cost", "")
    for x, scale, name, label, cost in (
        ("cumulative_seconds", 1.0, "accuracy-seconds", "cumulative training time (s)", "training time"),
        ("cumulative_flops", 1 / TFLOP, "accuracy-flops", "cumulative training compute (TFLOP)",
         "compute (a machine-independent cost)"),
    ):
        doc.figure(name, lambda x=x, scale=scale, label=label: figures.accuracy_curves(
                       run.epochs, run.iterations, x, label, scale, run.metric),
                   f"test {metric} against {cost}",
                   f"Test {metric} per epoch against cumulative {cost}; a colour, line style and marker per depth. "
                   f"A filled marker ends each iteration (its number beside it); a larger hollow one is the {metric} "
                   "right after its rebuild, and a hollow triangle at the bottom edge one below the axis, with its "
                   f"value. Look for end markers that stay level while each iteration costs less: the narrower "
                   f"network holds its {metric}.")


def _widths_frame(epochs: pd.DataFrame, iterations: pd.DataFrame, depths: dict | None = None) -> pd.DataFrame:
    """(depth, iteration, widths, ranks, censored) for finished iterations and, ranks None, one still running;
    censored: the marks of each row's widths (gather.widths_censored)."""
    rows = [] if iterations.empty else iterations[["depth", "iteration", "widths", "ranks"]].assign(
        censored=widths_censored(iterations, depths)).to_dict("records")
    seen = {(r["depth"], r["iteration"]): r for r in rows}
    recorded = {} if iterations.empty or "censored" not in iterations else dict(
        zip(zip(iterations["depth"], iterations["iteration"]), iterations["censored"]))
    if not epochs.empty:
        for r in epochs.drop_duplicates(["depth", "iteration"]).to_dict("records"):
            if (r["depth"], r["iteration"]) not in seen:
                before = recorded.get((r["depth"], r["iteration"] - 1))
                rows.append({"depth": r["depth"], "iteration": r["iteration"], "widths": r["widths"], "ranks": None,
                             "censored": before if isinstance(before, list) else None})
    return pd.DataFrame(rows)


def _widths(doc: _Document, run: RunData) -> None:
    widths = _widths_frame(run.epochs, run.iterations, run.depths)
    if not widths.empty:
        doc.add("## Widths per iteration", "")
        family = FAMILIES.get(run.config.get("model", {}).get("family", "mlp"))
        unit = getattr(family, "width_unit", "units")
        doc.figure("widths", lambda: figures.widths_per_iteration(widths, unit), "hidden-layer widths per iteration",
                   f"Width of each hidden layer per iteration (solid) and its rank `{run.measure}` measured at saturation "
                   "(dotted), which sets the next width."
                   + (" " + bound_note(sides_of(list(widths["censored"])), markers=True)).rstrip()
                   + " Look for the lines meeting and flattening: a fixed point.")


def _rank_traces(doc: _Document, run: RunData) -> None:
    epochs = run.epochs
    measures = [c.removeprefix("rank_") for c in epochs.columns if c.startswith("rank_")]
    if measures:
        doc.add("## Rank measures across epochs", "")
        for depth in sorted(epochs["depth"].unique()):
            part = epochs[epochs["depth"] == depth]
            doc.figure(f"ranks-depth-{depth}", lambda part=part: figures.ranks_across_epochs(part, measures, run.measure),
                       f"rank measures per layer across epochs, depth {depth}",
                       f"Depth {depth}: every rank measure of each weight matrix per epoch, each panel on its own scale "
                       "(dashed: the layer's width, where it fits the panel's scale; dotted verticals: an iteration "
                       "begins). Look for ranks that settle before the iteration ends, and for how far the measures "
                       "disagree.")


def _driving_rtol(spec: str) -> float | None:
    from rankprune.rank import parse_measure

    try:
        m = parse_measure(spec)
    except ValueError:
        return None
    return m.param if m.name == "numerical" else None


def _widths_of(iterations: pd.DataFrame, depth: int) -> dict[int, list]:
    """Iteration -> hidden widths of one depth's finished iterations."""
    if iterations.empty:
        return {}
    rows = iterations[iterations["depth"] == depth]
    return dict(zip(rows["iteration"].astype(int), rows["widths"]))


def _spectra(doc: _Document, run: RunData) -> None:
    spectra = run.spectra
    if not spectra.empty:
        doc.add("## Singular-value spectra per iteration", "")
        rtol = _driving_rtol(run.measure)
        for depth in sorted(spectra["depth"].unique()):
            part = spectra[spectra["depth"] == depth]
            widths = _widths_of(run.iterations, depth)
            doc.figure(f"spectra-depth-{depth}", lambda part=part, widths=widths: figures.spectra_per_iteration(part, rtol, widths),
                       f"singular-value spectra per iteration, depth {depth}",
                       f"Depth {depth}: singular values of each weight matrix at the end of each iteration, relative "
                       "to the largest (dark: early, light: late). The legend counts each line's singular values, "
                       "min(rows, columns) of the matrix, beside the layer's width: a first layer wider than its "
                       "input has as many as the input has features." + (
                           f" Look for the knee: values under the red line (rtol {rtol:g}) are what the numerical rank cuts."
                           if rtol is not None else " Look for the knee where the spectrum drops: the directions a layer uses."))


# --- tables ----------------------------------------------------------------------------------------
def _iteration_table(iterations: pd.DataFrame, depths: dict | None = None) -> pd.DataFrame:
    """One row per finished iteration; a censored width, of the widths trained or the next ones, reads '>= N'."""
    rows = []
    iterations = iterations.assign(widths_censored=widths_censored(iterations, depths))
    for r in iterations.sort_values(["depth", "iteration"]).to_dict("records"):
        next_marks = r.get("censored")
        rows.append({
            "depth": r["depth"], "iteration": r["iteration"], "phase": "" if _absent(r.get("phase")) else r["phase"],
            "widths": widths_text(r.get("widths") or [], r["widths_censored"]),
            "parameters": _count(r.get("parameters")), "weight decay": f"{r.get('weight_decay', float('nan')):.3g}",
            "epochs": _num(r.get("epochs")), "train stop": r.get("train_stop", ""),
            "train acc %": _pct(r.get("train_acc")), "val acc %": _pct(r.get("val_acc")),
            "test acc %": _pct(r.get("test_acc")), "gap (pp)": _pct(r.get("generalisation_gap")),
            "test acc % after rebuild": _pct(r.get("test_acc_after_rebuild")),
            f"ranks ({r.get('rank_measure', '?')})": _list(r.get("ranks")),
            "next widths": widths_text(r["next_widths"], next_marks) if isinstance(r.get("next_widths"), list) else "",
            "stop": "" if _absent(r.get("stop")) else r["stop"],
            "cumulative time (s)": _seconds(r.get("cumulative_seconds")),
        })
    table = pd.DataFrame(rows)
    return table if (table["phase"] != "").any() else table.drop(columns="phase")  # runs from before phases


def _iterations(doc: _Document, run: RunData) -> None:
    if not run.iterations.empty:
        doc.add("## Iterations", "")
        note = bound_note(sides_of(list(run.iterations["censored"]))) if "censored" in run.iterations else ""
        if note:
            doc.add(note, "")
        doc.table(_iteration_table(run.iterations, run.depths))


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


def _configuration(doc: _Document, run: RunData) -> None:
    doc.add("## Configuration", "", _provenance(run.environment), "")
    doc.table(_config_table(run.config))


# The report, top to bottom.
SECTIONS = (_header, _missing, _depths, _run_reference, _accuracy, _widths, _rank_traces, _spectra, rebuild_cost, dynamics.fitted,
            tasks.memorisation, tasks.unseen_tasks, tasks.n_delta, dynamics.movement, dynamics.hessian, _iterations,
            _configuration)


def render_run(run: RunFolder, out: Path, fmt: str = "png", dpi: float = figures.DPI) -> Path:
    """Write the report of a run folder to out/report.md (figures in out/figures, `fmt` files at `dpi`); return
    its path."""
    gathered = read_run(run)
    doc = _Document(out, fmt, dpi)
    with figures.group_names(_group_names(gathered)):
        for section in SECTIONS:
            section(doc, gathered)
    return doc.write()


def _group_names(gathered) -> list[str] | None:
    """A transformer's group names for the figures' legends (its widths are not hidden layers); None for a family
    whose groups are its layers, or a run whose family this rankprune does not know."""
    from rankprune.models import FAMILIES

    family = FAMILIES.get(gathered.config.get("model", {}).get("family", "mlp"))
    if family is None or family.name in ("mlp", "cnn") or gathered.iterations.empty:
        return None
    return [g.name for g in family.groups(list(gathered.iterations["widths"].iloc[0]))]
