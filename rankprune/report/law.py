"""The laws of a findings report (question 7: a law tested on settings it did not see): gathered from the
storage, then a row of the verdict table and a section each. A law has no p-value, so it is no member of the
suite's Holm family; its verdict is findings.law.law_sentence, generated, never written by hand.

A law is fitted once every one of its fit studies is complete (a fit on part of a grid would change as it fills);
a held-out study is read as far as it has run, its other settings listed as not run yet with the command that
runs them.
"""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass

import pandas as pd

from rankprune.findings.law import (SPREAD_SE, HeldOut, Law, LawOutcome, combine, evaluate_law, grid_settings,
                                    law_sentence, observations)

__all__ = ["LawResult", "gather_laws", "law_rows", "law_section"]


@dataclass(frozen=True)
class LawResult:
    law: Law
    id: str  # "Q7.1"
    outcome: LawOutcome | None  # None until every fit study is complete
    incomplete: tuple[tuple[str, str], ...]  # (study, what of it is missing) for each fit or held-out study not complete

    @property
    def missing_fit(self) -> list[str]:
        return [name for name, _ in self.incomplete if name in self.law.fit]


def _frame(experiment, url: str, progress) -> pd.DataFrame:
    """The study's trials table (frame.trials_table); empty where it has no trial yet."""
    from rankprune.findings.frame import trials_table
    from rankprune.study import load_study

    if progress is None or progress.complete_trials == 0:
        return pd.DataFrame()
    return trials_table(load_study(experiment.name, url, read_only=True), experiment.spec.mode)


def gather_laws(suite, url: str, results: list, findings: list, missing_text) -> list[LawResult]:
    """Each law of the suite fitted and tested on what its studies have run; `results` are the report's
    ExperimentResults (progress per study), `findings` its hypotheses (a law's id follows theirs in its question),
    `missing_text(result)` says what of a study is missing."""
    by_name = {r.experiment.name: r for r in results}
    numbering: dict[int, int] = {}
    for f in findings:
        q = f.experiment.question_of(f.index)
        numbering[q] = max(numbering.get(q, 0), int(f.id.split(" ")[0].split(".")[1]))
    out = []
    for law in suite.laws:
        numbering[law.question] = numbering.get(law.question, 0) + 1
        incomplete = tuple((n, missing_text(by_name[n])) for n in (*law.fit, *law.held_out) if not by_name[n].complete)
        outcome = None
        if not any(n in law.fit for n, _ in incomplete):
            fit_obs = combine([observations(_frame(by_name[n].experiment, url, by_name[n].progress),
                                            by_name[n].experiment, law) for n in law.fit], law)
            held = [HeldOut(n, observations(_frame(by_name[n].experiment, url, by_name[n].progress),
                                            by_name[n].experiment, law),
                            grid_settings(by_name[n].experiment, law), len(by_name[n].experiment.seeds))
                    for n in law.held_out]
            outcome = evaluate_law(law, fit_obs, held)
        out.append(LawResult(law, f"Q{law.question}.{numbering[law.question]}", outcome, incomplete))
    return out


def _missing(r: LawResult) -> str:
    return "fit studies not complete: " + "; ".join(f"{n} ({text})" for n, text in r.incomplete if n in r.law.fit)


def _claim(law: Law) -> str:
    return (f"a law of {law.y} on {', '.join(k.short for k in law.knobs)} predicts settings it did not see within "
            f"{law.tolerance:.0%}")


def law_rows(laws: list[LawResult]) -> list[dict]:
    """The laws' rows of the verdict table: no test, no p-value (no member of the Holm family)."""
    rows = []
    for r in laws:
        o = r.outcome
        judged = o.judged if o is not None else []
        passed = sum(p.within(r.law.tolerance) for p in judged)
        rows.append({
            "id": r.id, "question": str(r.law.question), "claim": _claim(r.law),
            "effect (95% CI)": f"within {r.law.tolerance:.0%} at {passed} of {len(judged)} held-out settings" if judged else "",
            "test": "least squares on log width; leave one setting out, held-out combinations" if o is not None else "",
            "statistic": "", "p": "", "Holm p": "",
            "n": f"{len(judged)} settings" if o is not None else "",
            "censored": f"{o.censored} of {o.observations}" if o is not None else "",
            "verdict": law_sentence(o, "" if o is not None else _missing(r)),
        })
    return rows


def _signed(v: float) -> str:
    return "" if math.isnan(v) else f"{v:+.3g}"


def _formula(o: LawOutcome) -> tuple[str, str]:
    """The fitted law written out: on the log scale, and as the product it is."""
    law, b = o.law, o.fit.coefficients
    log_form = f"log({law.y}) = {b[0]:.3g}" + "".join(
        f" {'-' if c < 0 else '+'} {abs(c):.3g}·{k.term()}" for k, c in zip(law.knobs, b[1:]))
    factors = [f"{k.param}^{c:.3g}" if k.transform == "log" else f"exp({c:.3g} × {k.param})"
               for k, c in zip(law.knobs, b[1:])]
    return log_form, f"{law.y} = {math.exp(b[0]):.3g} × " + " × ".join(factors)


def _number(v: float) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3g}"


def _percent(v: float) -> str:
    return "" if math.isnan(v) else f"{v:+.0%}"


def _table(o: LawOutcome) -> pd.DataFrame:
    t = o.table()
    out = t.drop(columns=["observed mean", "SD across seeds", "SD / mean", "predicted", "error"])
    out.insert(4, "observed mean", t["observed mean"].map(_number))
    out.insert(5, "SD across seeds", t["SD across seeds"].map(_number))
    out.insert(6, "SD / mean", t["SD / mean"].map(lambda v: "" if math.isnan(v) else f"{v:.0%}"))
    out.insert(9, "predicted", t["predicted"].map(_number))
    out.insert(10, "error (pred - obs) / obs", t["error"].map(_percent))
    return out.astype(str)


def law_section(doc, r: LawResult, run: list[str], report: list[str]) -> None:
    """The law's part of its question's section: the fitted law, the table of held-out settings, the figure and the
    verdict; or, while a fit study is not complete, what is missing and the command that runs it."""
    law, o = r.law, r.outcome
    doc.add(f"### {r.id}: law `{law.name}`", "")
    doc.add(f"The model: {law.formula()}, fitted by least squares (numpy lstsq) on one observation per setting and seed "
            f"of the fit studies ({', '.join(f'`{n}`' for n in law.fit)}): runs of one setting and seed in several of "
            "them (the default setting is in each) are one observation. Censored runs (a width that is a bound, not a "
            "measurement) are left out and counted. Held out: each knob value other than the reference "
            f"({', '.join(f'{p} {v:g}' for p, v in law.reference.items())}), predicted by the law refitted without "
            "every run at that value (leave one out), and each setting of "
            + (", ".join(f"`{n}`" for n in law.held_out) if law.held_out else "no held-out study")
            + ", predicted by the law fitted on every fit study.", "")
    studies = [*law.fit, *law.held_out]
    doc.add(f"Its runs: `{shlex.join([*run, '--only', *studies])}`; the fit and this section: "
            f"`{shlex.join(report)}`.", "")
    if r.incomplete:
        doc.add(f"**Not run yet:** {len(r.incomplete)} of its {len(studies)} studies not complete:", "")
        doc.bullets([f"`{n}` ({'fit' if n in law.fit else 'held out'}): {text}; run it with "
                     f"`{shlex.join([*run, '--only', n])}`" for n, text in r.incomplete])
    if o is None:
        doc.add(f"**Verdict:** {law_sentence(None, _missing(r))}", "")
        return
    log_form, product = _formula(o)
    doc.add("Fitted on every fit study:", "", "```", log_form, product, "```", "")
    fit = o.fit
    doc.table(pd.DataFrame({
        "term": ["intercept", *(k.term() for k in law.knobs)],
        "coefficient": [_signed(v) for v in fit.coefficients],
        "fitted range": ["", *(f"{fit.ranges[k.param][0]:g} to {fit.ranges[k.param][1]:g}" if k.param in fit.ranges
                               else "" for k in law.knobs)],
    }))
    spread = "" if math.isnan(fit.residual_sd) else (
        f" The residual SD of log {law.y} is {fit.residual_sd:.3g}: a run lies within a factor "
        f"{math.exp(fit.residual_sd):.3g} of the law about two times in three.")
    doc.add(f"{fit.n} observations fitted, {o.censored} of {o.observations} censored and left out.{spread}", "")
    doc.add(f"Per held-out setting: the observed mean over seeds (each seed's runs averaged) with its SD across seeds, "
            f"the prediction exp(fit) (a geometric mean: the fit is on the log scale), the error (pred - obs) / obs, "
            f"whether it is within {law.tolerance:.0%}, and whether it is within the seeds' own spread: |pred - obs| <= "
            f"{SPREAD_SE:g} SD / sqrt(n), two standard errors of the observed mean. Extrapolated: the knobs whose value "
            "lies outside the range the law was fitted on.", "")
    doc.table(_table(o))
    doc.figure(f"{law.name}-law", o.draw, _claim(law),
               f"The law's prediction against the observed mean at each held-out setting (log axes, hidden units): a "
               f"colour per knob held out (the label is its value), a square per held-out combination (its label is "
               f"its row of the table), open where a knob lies outside the fitted range; bars: SD across seeds; "
               f"grey band: within ±{law.tolerance:.0%} of the observed mean.")
    doc.add(f"**Verdict:** {law_sentence(o)}", "")
