"""The report of a findings suite: OUT/findings.md, its verdict table first, then a section per question, and a
PNG per hypothesis beside it.

Every verdict is generated from the analysis layer's Verdict (verdict_sentence), never written by hand, and Holm's
correction runs over every tested hypothesis of the whole suite: a claim is "supported" only at Holm p <= 0.05.
A law of the suite ([[law]]: report.law) has a row of the verdict table and a section in its question, and no
p-value: it is no member of the Holm family. A baseline ([[baseline]]: report.cost) has a section in its question:
accuracy against training FLOPs and seconds beside the study it follows.
An experiment whose grid is not complete yet is listed with what is missing and the command that runs it; its
hypotheses read "not run yet" and are not in the Holm family, so a partly run suite renders and says so.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import platform
import shlex
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from rankprune import figures as figure_files
from rankprune.analysis import Verdict, holm
from rankprune.config import ConfigError
from rankprune.findings.hypotheses import Hypothesis, Outcome, Tested, claim_of, evaluate
from rankprune.findings.progress import Progress, cell_key, cell_text, grid_cells
from rankprune.findings.runner import progress_of
from rankprune.findings.suite import Experiment, Suite
from rankprune.study import _sqlite_path
from rankprune.report.document import _check_out, _Document, _num
from rankprune.report.extras import render_extras
from rankprune.report.cost import CostResult, cost_section, gather_costs
from rankprune.report.law import LawResult, gather_laws, law_rows, law_section
from rankprune.units import bound_note

__all__ = ["REPORT", "ALPHA", "Finding", "verdict_sentence", "gather", "holm_over_suite", "render_findings"]

REPORT = "findings.md"
ALPHA = 0.05  # a claim is supported at Holm p <= ALPHA over the whole suite
SHOWN_CELLS = 8  # missing cells listed by name; more are counted


@dataclass(frozen=True)
class Finding:
    """One verdict line of the report: a hypothesis (or one group of its `by`), tested or not run yet."""
    id: str  # "Q2.1", or "Q2.1 (evolve.rebuild = warm)"
    experiment: Experiment
    index: int  # of the hypothesis in its experiment
    tested: Tested | None  # None: its experiment is not complete

    @property
    def hypothesis(self) -> Hypothesis:
        return self.experiment.hypotheses[self.index]


@dataclass(frozen=True)
class ExperimentResult:
    experiment: Experiment
    progress: Progress | None  # None where its storage could not be read (`error` says why)
    error: str
    outcomes: tuple[Outcome | None, ...]  # per hypothesis; None while the grid is not complete
    frame: pd.DataFrame | None = None  # its trials (findings.frame.trials_table), once the grid is complete
    trial_seconds: float = 0.0  # its complete trials' wall time, start to end, summed (what it cost, measured)

    @property
    def complete(self) -> bool:
        return self.progress is not None and self.progress.complete


# --- the verdict sentence --------------------------------------------------------------------------------
def verdict_sentence(tested: Tested | None, missing: str = "") -> str:
    """What the report concludes from one verdict, in one sentence: supported, not significant, not answered (more
    than half the runs censored), no test, or not run yet."""
    if tested is None:
        return "not run yet" + (f": {missing}" if missing else "")
    v = tested.verdict
    if not tested.answered:
        return f"not answered: {tested.censored} of {tested.rows} runs censored"
    if math.isnan(v.p_value):
        return f"no test: {v.note}"
    p = f"{'Holm p' if v.p_adjusted is not None else 'p'} = {v.p:.2g}"
    if v.significant(ALPHA):
        # a two-sided claim ("goes with", "differs") says which way it went: the sign is the finding
        way = "" if v.alternative != "two-sided" or v.effect.estimate == 0 else \
            f", in the {'positive' if v.effect.estimate > 0 else 'negative'} direction"
        return f"supported: {v.claim}{way} ({v.effect.text()}, {p})"
    sentence = f"not significant: {v.claim} was not shown ({p}; the smallest p this design allows is {v.p_floor:.2g}"
    if v.p_floor > ALPHA:
        sentence += f"; these seeds cannot reach {ALPHA:g}"
    sentence += ")"
    # a one-sided claim whose effect points the other way: say so, the numbers are reported whichever way they point
    if (v.alternative == "greater" and v.effect.estimate < 0) or (v.alternative == "less" and v.effect.estimate > 0):
        sentence += f"; the effect went the other way ({v.effect.name} {v.effect.estimate:+.3g})"
    return sentence


# --- gathering ---------------------------------------------------------------------------------------------
def _grid_rows(frame: pd.DataFrame, experiment: Experiment) -> pd.DataFrame:
    """The trials whose parameters are a cell of the suite's grid (a study file changed since would add others)."""
    cells = {cell_key(c) for c in grid_cells(experiment.spec)}
    keys = list(grid_cells(experiment.spec)[0])
    if frame.empty or any(k not in frame for k in keys):
        return frame
    inside = [cell_key(dict(zip(keys, values))) in cells for values in zip(*(frame[k].tolist() for k in keys))]
    return frame[inside]


def _result(experiment: Experiment, url: str) -> ExperimentResult:
    from rankprune.findings.frame import trials_table
    from rankprune.study import load_study

    progress = progress_of(experiment, url)
    if isinstance(progress, ConfigError):
        return ExperimentResult(experiment, None, str(progress), (None,) * len(experiment.hypotheses))
    if not progress.complete:
        return ExperimentResult(experiment, progress, "", (None,) * len(experiment.hypotheses))
    study = load_study(experiment.name, url, read_only=True)
    frame = _grid_rows(trials_table(study, experiment.spec.mode), experiment)
    inside = set(frame["number"]) if "number" in frame else set()
    seconds = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in study.get_trials(deepcopy=False)
                  if t.number in inside and t.datetime_complete is not None and t.datetime_start is not None)
    return ExperimentResult(experiment, progress, "", tuple(evaluate(frame, h) for h in experiment.hypotheses), frame,
                            seconds)


def gather(suite: Suite, url: str) -> tuple[list[ExperimentResult], list[Finding]]:
    """Each experiment's progress and outcomes, and every finding of the suite, Holm-corrected over all that were
    tested (those with a p-value, of complete experiments)."""
    results = [_result(e, url) for e in suite.experiments]
    findings: list[Finding] = []
    numbering: dict[int, int] = {}
    for r in results:
        for k, outcome in enumerate(r.outcomes):
            q = r.experiment.question_of(k)
            numbering[q] = numbering.get(q, 0) + 1
            base = f"Q{q}.{numbering[q]}"
            if outcome is None:
                findings.append(Finding(base, r.experiment, k, None))
                continue
            for t in outcome.tested:
                findings.append(Finding(f"{base} ({t.group})" if t.group else base, r.experiment, k, t))
    return results, holm_over_suite(findings, suite.name)


def holm_over_suite(findings: list[Finding], suite: str) -> list[Finding]:
    """The findings with Holm's correction over every one that was tested (analysis.holm: a verdict without a
    p-value is no member); those not run yet are no members either."""
    tested = [i for i, f in enumerate(findings) if f.tested is not None]
    adjusted = holm([findings[i].tested.verdict for i in tested], f"suite {suite}")
    out = list(findings)
    for i, v in zip(tested, adjusted):
        out[i] = dataclasses.replace(out[i], tested=dataclasses.replace(out[i].tested, verdict=v))
    return out


# --- the sections --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Context:
    suite: Suite
    url: str
    run: list[str]  # the command that runs the suite, as argv
    report: list[str]  # the command that writes this report
    results: list[ExperimentResult]
    findings: list[Finding]
    laws: list[LawResult] = dataclasses.field(default_factory=list)
    costs: list[CostResult] = dataclasses.field(default_factory=list)


def _command(argv: list[str]) -> str:
    return f"`{shlex.join(argv)}`"


def _versions() -> str:
    from rankprune.provenance import _git_revision, _version

    names = ("rankprune", "optuna", "torch", "numpy", "scipy", "pandas", "matplotlib")
    parts = [f"python {platform.python_version()}"] + [f"{n} {_version(n) or '?'}" for n in names]
    return "; ".join(parts) + f"; git {_git_revision() or 'unknown'}"


def _header(doc: _Document, c: _Context) -> None:
    from rankprune.study import _redact

    doc.add(f"# Findings: {c.suite.name}", "")
    if c.suite.description.strip():
        doc.add(c.suite.description.strip(), "")
    doc.add("Reproduce it with:", "", "```", shlex.join(c.run), shlex.join(c.report), "```", "",
            f"Made {dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} from `{_redact(c.url)}` with "
            f"{_versions()}.", "")
    doc.add(f"Each claim is tested on its study's runs with the seed as the unit of replication: runs of one seed "
            f"share its data split and draws, so tests correlate or pair within seeds; censored runs (a width that is a bound, not a measurement) are left out of every test and "
            f"counted. Holm's correction runs over all {sum(f.tested is not None and not math.isnan(f.tested.verdict.p_value) for f in c.findings)} "
            f"tested hypotheses of the suite; a claim is supported at Holm p <= {ALPHA:g}.", "")
    spent = sum(r.trial_seconds for r in c.results)
    if spent:
        doc.add(f"Trial time summed over every complete study: {spent / 3600:.2f} hours (each trial's wall time, start "
                "to end; trials that ran side by side, one thread each, overlap in it).", "")


def _effect_cell(v: Verdict) -> str:
    e = v.effect
    if math.isnan(e.estimate):
        return ""
    interval = f" [{e.ci[0]:+.3g}, {e.ci[1]:+.3g}]" if e.ci is not None else " (no CI)"
    return f"{e.name}: {e.estimate:+.3g}{interval}"


def _p(v: float | None) -> str:
    return "" if v is None or math.isnan(v) else f"{v:.2g}"


def _missing_text(r: ExperimentResult) -> str:
    if r.progress is None:
        return r.error
    counts = r.progress.counts()
    return (f"{len(r.progress.missing)} of {r.progress.declared} trials missing ("
            + ", ".join(f"{n} {state}" for state, n in counts.items()) + ")")


def _verdicts(doc: _Document, c: _Context) -> None:
    rows = []
    by_experiment = {r.experiment.name: r for r in c.results}
    for f in c.findings:
        t = f.tested
        v = t.verdict if t is not None else None
        rows.append({
            "id": f.id, "question": str(f.experiment.question_of(f.index)),
            "claim": v.claim if v is not None else claim_of(f.hypothesis),
            "effect (95% CI)": _effect_cell(v) if v is not None else "",
            "test": v.test if v is not None and v.test != "none" else "",
            "statistic": _num(v.statistic) if v is not None else "",
            "p": _p(v.p_value) if v is not None else "", "Holm p": _p(v.p_adjusted) if v is not None else "",
            "n": f"{v.n} {v.unit}s" if v is not None else "",
            "censored": (f"{t.censored} of {t.rows}" + (f" ({t.kept} kept)" if t.kept else "")) if t is not None else "",
            "verdict": verdict_sentence(t, _missing_text(by_experiment[f.experiment.name])),
        })
    rows += law_rows(c.laws)  # no p-value: no member of the Holm family
    doc.add("## Verdicts", "")
    doc.table(pd.DataFrame(rows))


def _missing(doc: _Document, c: _Context) -> None:
    incomplete = [r for r in c.results if not r.complete]
    if not incomplete:
        return
    doc.add("## What is missing", "", f"{len(incomplete)} of {len(c.results)} experiments are not complete; their "
            "hypotheses are not run yet and are not in the Holm family.", "")
    doc.bullets([f"`{r.experiment.name}` (question {', '.join(map(str, r.experiment.questions))}): {_missing_text(r)}; run it with "
                 f"{_command([*c.run, '--only', r.experiment.name])}" for r in incomplete])


def _mean_text(v) -> str:
    """A mean as the summary shows it: FLOPs and other large counts in 3 significant digits (8.8e+11), not as
    twelve-digit integers; the rest as the report's numbers."""
    return f"{v:.3g}" if isinstance(v, (int, float)) and not math.isnan(v) and abs(v) >= 1e6 else _num(v)


def _summary_table(table: pd.DataFrame) -> pd.DataFrame:
    """The per-setting summary as the report shows it: the mean, '[low, high]', seeds, censored runs as bounds."""
    first = [col for col in table.columns if col not in ("mean", "ci_low", "ci_high", "ci_method", "n", "censored", "bounds")]
    out = pd.DataFrame({col: table[col].map(lambda v: _num(v) if isinstance(v, float) else str(v)) for col in first})
    out["mean"] = table["mean"].map(_mean_text)
    out["95% interval"] = [f"[{_num(lo)}, {_num(hi)}]" if not math.isnan(lo) else "" for lo, hi in
                           zip(table["ci_low"], table["ci_high"])]
    out["n"] = table["n"].map(str)
    out["censored (left out)"] = [f"{n}: {b}" if n else "0" for n, b in zip(table["censored"], table["bounds"])]
    return out


def _experiment(doc: _Document, c: _Context, r: ExperimentResult, question: int) -> None:
    """The experiment's part of a question's section: its hypotheses that answer `question`."""
    e = r.experiment
    answering = [k for k in range(len(e.hypotheses)) if e.question_of(k) == question]
    mine = [f for f in c.findings if f.experiment is e]
    first_id = {f.index: f.id.split(" ")[0] for f in reversed(mine)}
    doc.add(f"### {e.name}", "")
    cost = f" Cost: {e.cost}." if e.cost else ""
    if r.complete and r.trial_seconds:
        cost += f" Measured: {r.trial_seconds / 60:.1f} minutes of trial time (its trials' wall time summed)."
    made = f" Produced by {_command([*c.run, '--only', e.name])}." if r.complete else ""
    doc.add(f"Study file `{e.file}` ({e.spec.mode}, seeds {', '.join(map(str, e.seeds))}), {e.declared} trials in its "
            f"grid.{made}{cost}", "")
    if not e.hypotheses:
        readers = [law.name for law in c.suite.laws if e.name in (*law.fit, *law.held_out)]
        doc.add("It tests no hypothesis of its own" + (f"; law {', '.join(f'`{n}`' for n in readers)} reads its runs"
                                                       if readers else "") + ".", "")
    if not r.complete:
        doc.add(f"**Not run yet:** {_missing_text(r)}. Run it with {_command([*c.run, '--only', e.name])}.", "")
        if r.progress is not None:
            missing = r.progress.missing
            shown = [f"{cell_text(cell.params)}: {cell.state}" + (f" ({cell.reason})" if cell.reason else "")
                     for cell in missing[:SHOWN_CELLS]]
            if len(missing) > SHOWN_CELLS:
                shown.append(f"and {len(missing) - SHOWN_CELLS} more")
            doc.bullets(shown)
        if answering:
            doc.add("Its hypotheses, not run yet:", "")
            doc.bullets([f"{first_id[k]}: {claim_of(e.hypotheses[k])}" for k in answering])
        return
    if r.progress.outside:
        doc.add(f"*{r.progress.outside} complete trial(s) of this study lie outside the suite's grid (its file "
                "changed since they ran) and are left out.*", "")
    for k, (h, outcome) in enumerate(zip(e.hypotheses, r.outcomes)):
        if k not in answering:
            continue
        doc.add(f"#### {first_id[k]}: {claim_of(h)}", "")
        drawn = not outcome.table.empty  # empty: nothing to summarise or draw (the trials never recorded it)
        if drawn:
            doc.table(_summary_table(outcome.table))
            methods = sorted(set(outcome.table["ci_method"]))
            doc.add(f"Intervals: {'; '.join(methods)}.", "")
        if outcome.sides:
            doc.add(bound_note(outcome.sides), "")
        tested = [f.tested for f in mine if f.index == k]  # Holm-adjusted over the suite
        doc.bullets([t.verdict.text() for t in tested])
        if drawn:
            doc.figure(f"{e.name}-{k + 1}", outcome.draw, claim_of(h), outcome.caption)
        for t in tested:
            doc.add(f"**Verdict{' (' + t.group + ')' if t.group else ''}:** {verdict_sentence(t)}", "")
    if question == e.question:  # what it shows besides its hypotheses, once: in its own question
        render_extras(doc, e, c.url, r.frame)


def _questions(doc: _Document, c: _Context) -> None:
    for number, title in c.suite.questions.items():
        mine = [r for r in c.results if number in r.experiment.questions]
        laws = [r for r in c.laws if r.law.question == number]
        costs = [r for r in c.costs if r.baseline.question == number]
        doc.add(f"## Question {number}: {title}", "")
        if not mine and not laws and not costs:
            doc.add("No experiment of the suite answers this question yet.", "")
        for r in mine:
            _experiment(doc, c, r, number)
        for r in laws:
            law_section(doc, r, c.run, c.report)
        for r in costs:
            cost_section(doc, r, c.run, c.report)


SECTIONS = (_header, _verdicts, _missing, _questions)


def render_findings(suite: Suite, url: str, out: Path, run: list[str], report: list[str], fmt: str = "png",
                    dpi: float = figure_files.DPI, root: Path | None = None, fetcher=None) -> Path:
    """Write OUT/findings.md and its figures (beside it) for the suite's studies in `url`; `run` and `report` are the
    commands (argv) that reproduce it; `root` is the runner's (its baselines' results; None: the folder of a SQLite
    storage). Returns the path of findings.md."""
    _check_out(out, REPORT)
    results, findings = gather(suite, url)
    laws = gather_laws(suite, url, results, findings, _missing_text)
    if root is None and _sqlite_path(url) is not None:
        root = _sqlite_path(url).parent
    costs = gather_costs(suite, url, root, results, _missing_text, fetcher)
    context = _Context(suite, url, run, report, results, findings, laws, costs)
    doc = _Document(out, fmt, dpi, report=REPORT, figure_dir="")
    for section in SECTIONS:
        section(doc, context)
    return doc.write()
