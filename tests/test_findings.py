"""Findings (issue 20): the suite file, the runner that tops its studies up, the hypotheses and the report.

Verdicts are tested on synthetic trials tables (no training), against hand-worked values; the runner and the
report on a real tiny suite on digits (two grid studies of 2 seeds x 2 settings, a few epochs each), run once per
module; the SIGKILL test kills a real `rankprune findings run` process mid-suite and runs it again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import os
import re
import signal
import subprocess
import sys
import time
from itertools import product
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from PIL import Image
from scipy import stats

from cli_checks import one_line_error
from rankprune.analysis import Effect, Verdict, mean_interval
from rankprune.cli import main
from rankprune.config import ConfigError
from rankprune.findings import Hypothesis, evaluate, parse_suite, with_overrides
from rankprune.findings.progress import cell_key, grid_progress
from rankprune.report.findings import Finding, holm_over_suite, verdict_sentence

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

GUARD_S = 240  # a hung child fails the test instead of the suite; not a timing assertion
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
LINK = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)")


# --- synthetic trials tables ---------------------------------------------------------------------------------
def trend_table(y_of, seeds=(0, 1, 2), xs=(0.0, 0.2, 0.4, 0.6), censored=()) -> pd.DataFrame:
    """One row per (seed, label noise), total_width = y_of(seed, x); rows in `censored` are '>= w' bounds."""
    rows = [{"number": n, "seed": s, "data.label_noise": x, "total_width": float(y_of(s, x)),
             "censored": ["initial"] if (s, x) in censored else [None]}
            for n, (s, x) in enumerate(product(seeds, xs))]
    frame = pd.DataFrame(rows)
    frame.attrs["params"] = ["data.label_noise", "seed"]
    return frame


def paired_table(diff_of, seeds=range(6)) -> pd.DataFrame:
    rows = []
    for s in seeds:
        rows.append({"number": len(rows), "seed": s, "evolve.rebuild": "reinit", "total_width": 30.0 + s, "censored": [None]})
        rows.append({"number": len(rows), "seed": s, "evolve.rebuild": "warm", "total_width": 30.0 + s + diff_of(s),
                     "censored": [None]})
    frame = pd.DataFrame(rows)
    frame.attrs["params"] = ["evolve.rebuild", "seed"]
    return frame


TREND = Hypothesis("trend", {"x": "data.label_noise", "y": "total_width"}, "the width rises with label noise", "greater")
PAIRED = Hypothesis("paired", {"value": "total_width", "condition": "evolve.rebuild", "a": "warm", "b": "reinit"},
                    "warm ends wider than reinit", "greater")
NOISE = np.random.default_rng(3).normal(size=(3, 4))  # fixed draws with no trend in them


def test_a_trend_verdict_is_supported_with_a_strong_effect_and_not_without_it():
    [strong] = evaluate(trend_table(lambda s, x: 40 + 100 * x + s), TREND).tested
    assert strong.verdict.p_value == pytest.approx(1 / 24 ** 3)  # rho = 1 in each seed: the one most extreme order
    assert strong.verdict.n == 3 and strong.verdict.unit == "seed"
    assert verdict_sentence(strong).startswith("supported: the width rises with label noise (Spearman rho")

    flat = evaluate(trend_table(lambda s, x: 40 + NOISE[s, int(round(5 * x))]), TREND)
    [none] = flat.tested
    assert none.verdict.p_value > 0.05
    assert verdict_sentence(none).startswith("not significant: the width rises with label noise was not shown (p = ")
    # the summary: per setting a mean over seeds, Student's t with 3 seeds, nothing censored
    assert list(flat.table.columns[:1]) == ["data.label_noise"] and list(flat.table["n"]) == [3] * 4
    assert set(flat.table["ci_method"]) == {"Student's t over 3 seeds"}


def test_a_two_sided_verdict_says_which_way_it_went():
    """A two-sided claim ("goes with") is supported either way; the sentence must say the sign, which is the finding
    (across label noise the width went against the generalisation gap, not with it)."""
    goes = dataclasses.replace(TREND, claim="the width goes with label noise", alternative="two-sided")
    [down] = evaluate(trend_table(lambda s, x: 400 - 100 * x + s), goes).tested
    [up] = evaluate(trend_table(lambda s, x: 40 + 100 * x + s), goes).tested
    assert verdict_sentence(down).startswith("supported: the width goes with label noise, in the negative direction (")
    assert verdict_sentence(up).startswith("supported: the width goes with label noise, in the positive direction (")
    assert ", in the" not in verdict_sentence(evaluate(trend_table(lambda s, x: 40 + 100 * x + s), TREND).tested[0])
    # a one-sided claim ("rises") that the data contradict is not significant, and the sentence says which way it went
    [against] = evaluate(trend_table(lambda s, x: 400 - 100 * x + s), TREND).tested
    assert verdict_sentence(against).endswith("; the effect went the other way (Spearman rho, mean within seed -1)")
    assert "other way" not in verdict_sentence(evaluate(trend_table(lambda s, x: 40 + 100 * x + s), TREND).tested[0])


def test_where_with_a_list_keeps_the_rows_at_those_values_and_may_subset_x():
    """Question 1 asks whether the start still predicts the end among starts above the convergent width: `where`
    keeps the rows at a list of values, of x itself too. Below 0.4 the synthetic width follows x; from there it is
    flat, so the trend holds on all rows and not on the subset."""
    table = trend_table(lambda s, x: 40 + 100 * min(x, 0.4) + NOISE[s, int(round(5 * x))])
    both = dataclasses.replace(TREND, alternative="two-sided")
    assert evaluate(table, both).tested[0].verdict.p_value < 0.05
    above = dataclasses.replace(both, where={"data.label_noise": [0.4, 0.6]})
    [kept] = evaluate(table, above).tested
    assert kept.rows == 6 and kept.verdict.p_value > 0.05


def test_a_paired_verdict_is_supported_with_a_strong_effect_and_not_without_it():
    [strong] = evaluate(paired_table(lambda s: 10.0), PAIRED).tested
    assert strong.verdict.p_value == pytest.approx(1 / 64)  # 6 seeds, every difference positive: 1 of 2^6 patterns
    assert strong.verdict.effect.estimate == pytest.approx(10.0)
    assert verdict_sentence(strong).startswith("supported: warm ends wider than reinit (mean difference warm - reinit +10")

    outcome = evaluate(paired_table(lambda s: 1.0 if s % 2 else -1.0), PAIRED)
    [none] = outcome.tested
    assert none.verdict.p_value > 0.05 and not none.verdict.significant()
    assert list(outcome.table["evolve.rebuild"]) == ["warm", "reinit"]
    assert list(outcome.table["n"]) == [6, 6]
    [one] = evaluate(paired_table(lambda s: 10.0, seeds=[0]), PAIRED).tested  # one difference: no null to test it on
    assert verdict_sentence(one) == "no test: pairs from one seed only: too few to test"


def test_an_association_verdict_flips_when_the_two_quantities_stop_going_together():
    """Rank against the generalisation gap, within seeds: 6 trials a seed whose width follows the gap in every seed
    (each seed at its own level, which a pooled correlation would mix up), then the same widths against gaps drawn
    without any relation to them."""
    rng = np.random.default_rng(11)
    gaps = rng.uniform(0.0, 0.1, size=(3, 6))
    def table(width_of):
        rows = [{"number": 6 * s + k, "seed": s, "generalisation_gap": gaps[s, k], "total_width": width_of(s, k),
                 "censored": [None]} for s in range(3) for k in range(6)]
        frame = pd.DataFrame(rows)
        frame.attrs["params"] = ["seed"]
        return frame
    h = Hypothesis("association", {"x": "generalisation_gap", "y": "total_width"}, "the width goes with the gap")
    [strong] = evaluate(table(lambda s, k: 100 * s + 1000 * gaps[s, k]), h).tested
    assert strong.verdict.effect.estimate == pytest.approx(1.0) and strong.verdict.p_value < 0.001
    assert verdict_sentence(strong).startswith("supported: the width goes with the gap, in the positive direction")
    unrelated = np.random.default_rng(5).uniform(0, 100, size=(3, 6))  # fixed draws, no relation to the gaps
    [none] = evaluate(table(lambda s, k: 100 * s + unrelated[s, k]), h).tested
    assert none.verdict.p_value > 0.05 and verdict_sentence(none).startswith("not significant:")


def versus_table(gap_of, seeds=range(6), depths=(2, 3)) -> pd.DataFrame:
    """Each run's chosen test accuracy and its scratch control's: scratch = chosen - gap_of(seed)."""
    rows = [{"number": n, "seed": s, "depth": d, "test_acc": 0.95 + 0.002 * s + 0.001 * d,
             "scratch_test_acc": 0.95 + 0.002 * s + 0.001 * d - gap_of(s), "censored": ["initial"] if s == 0 else [None]}
            for n, (s, d) in enumerate(product(seeds, depths))]
    frame = pd.DataFrame(rows)
    frame.attrs["params"] = ["depth", "seed"]
    return frame


VERSUS = Hypothesis("versus", {"a": "test_acc", "b": "scratch_test_acc"}, "the chosen network beats its scratch control",
                    "greater")


def test_a_versus_verdict_pairs_two_quantities_of_the_same_runs():
    """The scratch control: the chosen network's accuracy against the same widths trained from scratch, run by run,
    averaged per seed. An accuracy of a run whose width is censored is still a measurement: no row is left out."""
    [strong] = evaluate(versus_table(lambda s: 0.01), VERSUS).tested
    assert strong.verdict.p_value == pytest.approx(1 / 64) and strong.verdict.n == 6
    assert strong.verdict.effect.estimate == pytest.approx(0.01)
    assert verdict_sentence(strong).startswith("supported: the chosen network beats its scratch control (mean difference")
    [none] = evaluate(versus_table(lambda s: 0.01 if s % 2 else -0.01), VERSUS).tested
    assert none.verdict.p_value > 0.05
    outcome = evaluate(versus_table(lambda s: 0.01), VERSUS)
    assert list(outcome.table["quantity"]) == ["test_acc", "scratch_test_acc"] and list(outcome.table["n"]) == [6, 6]


def prediction_table(last_of, seeds=(0, 1, 2), classes=(3, 5, 7, 10)) -> pd.DataFrame:
    rows = [{"number": n, "seed": s, "data.classes": c, "last_width": float(last_of(s, c)), "censored": [None, None]}
            for n, (s, c) in enumerate(product(seeds, classes))]
    frame = pd.DataFrame(rows)
    frame.attrs["params"] = ["data.classes", "seed"]
    return frame


PREDICTION = Hypothesis("prediction", {"y": "last_width", "x": "data.classes", "offset": -1},
                        "the last layer differs from C - 1")


@pytest.mark.parametrize("seeds", [(0, 1, 2, 3, 4, 5)])
def test_a_prediction_verdict_flips_when_the_measured_widths_follow_the_prediction(seeds):
    """Neural collapse predicts C - 1 for the last hidden layer: widths of C + 2 differ from it in every seed; widths
    scattered around C - 1 (one seed above, the next below) do not."""
    [off] = evaluate(prediction_table(lambda s, c: c + 2, seeds), PREDICTION).tested
    assert off.verdict.p_value == pytest.approx(2 / 64)  # two-sided, every seed's mean difference +3
    assert off.verdict.effect.estimate == pytest.approx(3.0)
    assert "last_width - (data.classes - 1)" in off.verdict.effect.name
    [on] = evaluate(prediction_table(lambda s, c: c - 1 + (1 if s % 2 else -1), seeds), PREDICTION).tested
    assert on.verdict.p_value > 0.05
    table = evaluate(prediction_table(lambda s, c: c + 2, seeds), PREDICTION).table
    assert list(table["data.classes"]) == [3, 5, 7, 10] and list(table["predicted"]) == [2.0, 4.0, 6.0, 9.0]
    assert list(table["mean"]) == [5.0, 7.0, 9.0, 12.0]


def test_censored_rows_are_left_out_of_the_test_and_counted_as_bounds():
    censored = {(0, 0.6), (2, 0.0)}
    outcome = evaluate(trend_table(lambda s, x: 40 + 100 * x + s, censored=censored), TREND)
    [t] = outcome.tested
    assert (t.rows, t.censored) == (12, 2) and t.answered
    assert len(t.verdict.excluded) == 2 and all("[initial]" in e for e in t.verdict.excluded)
    assert outcome.table["censored"].sum() == 2
    assert list(outcome.table["n"]) == [2, 3, 3, 2]  # the censored seed is no part of its setting's mean
    assert "seed 0: >= 100" in outcome.table.loc[3, "bounds"]  # 40 + 100 * 0.6 + 0, shown as the bound it is
    assert outcome.sides == {">="}


def test_a_verdict_on_mostly_censored_rows_is_not_answered():
    censored = {(s, x) for s in (0, 1) for x in (0.0, 0.2, 0.4, 0.6)}  # 8 of 12
    [t] = evaluate(trend_table(lambda s, x: 40 + 100 * x + s, censored=censored), TREND).tested
    assert verdict_sentence(t) == "not answered: 8 of 12 runs censored"


def test_trend_by_gives_one_verdict_per_value_and_where_restricts_the_rows():
    strong, flat = trend_table(lambda s, x: 40 + 100 * x + s), trend_table(lambda s, x: 40 + NOISE[s, int(round(5 * x))])
    frame = pd.concat([strong.assign(**{"evolve.rebuild": "warm"}), flat.assign(**{"evolve.rebuild": "reinit"})],
                      ignore_index=True)
    frame.attrs["params"] = ["data.label_noise", "evolve.rebuild", "seed"]
    by = Hypothesis("trend", TREND.options, TREND.claim, "greater", by="evolve.rebuild")
    outcome = evaluate(frame, by)
    assert [t.group for t in outcome.tested] == ["evolve.rebuild = reinit", "evolve.rebuild = warm"]
    assert [t.verdict.significant() for t in outcome.tested] == [False, True]
    assert outcome.tested[1].verdict.claim == "the width rises with label noise (evolve.rebuild = warm)"
    assert list(outcome.table.columns[:2]) == ["evolve.rebuild", "data.label_noise"]
    [warm] = evaluate(frame, Hypothesis("trend", TREND.options, None, "greater", where={"evolve.rebuild": "warm"})).tested
    assert warm.rows == 12 and warm.verdict.significant()


def verdict(p: float, floor: float = 0.001) -> Verdict:
    return Verdict("claim", Effect("rho", 0.5, None, 0.95, "too few"), "test", 0.5, p, floor, "greater", 3, "seed")


def finding(p: float | None) -> Finding:
    from rankprune.findings.hypotheses import Tested

    return Finding("Q1.1", None, 0, None if p is None else Tested(verdict(p), 6, 0))


def test_holm_runs_over_every_tested_hypothesis_of_the_suite_as_worked_by_hand():
    # p = 0.01, 0.04, 0.03 (m = 3): 0.01 * 3 = 0.03; 0.03 * 2 = 0.06; 0.04 * 1 = 0.04, raised to 0.06 (monotone).
    # A verdict without a test and a hypothesis not run yet are no members of the family.
    found = holm_over_suite([finding(0.01), finding(0.04), finding(None), finding(0.03), finding(math.nan)], "s")
    assert [f.tested.verdict.p_adjusted if f.tested else "not run" for f in found[:4]] == \
        pytest.approx([0.03, 0.06, "not run", 0.06])
    assert found[4].tested.verdict.p_adjusted is None
    assert found[0].tested.verdict.family == "suite s (3 tests)"
    assert verdict_sentence(found[0].tested).startswith("supported: claim (rho +0.5 (no CI: too few), Holm p = 0.03)")
    assert verdict_sentence(found[1].tested) == ("not significant: claim was not shown (Holm p = 0.06; the smallest p "
                                                 "this design allows is 0.001)")
    assert verdict_sentence(found[2].tested, "4 of 4 trials missing") == "not run yet: 4 of 4 trials missing"


def test_the_verdict_says_when_these_seeds_cannot_reach_005():
    from rankprune.findings.hypotheses import Tested

    text = verdict_sentence(Tested(verdict(0.25, floor=0.25), 6, 0))
    assert text.endswith("(p = 0.25; the smallest p this design allows is 0.25; these seeds cannot reach 0.05)")
    no_test = Verdict("claim", Effect("rho", math.nan, None, 0.95, "x"), "none", math.nan, math.nan, math.nan, "",
                      1, "seed", note="too few seeds")
    assert verdict_sentence(Tested(no_test, 4, 1)) == "no test: too few seeds"


def test_mean_interval_is_students_t_below_8_values_and_the_bootstrap_from_there():
    values = [3.0, 5.0, 10.0]
    half = stats.t.ppf(0.975, 2) * np.std(values, ddof=1) / math.sqrt(3)
    lo, hi, how = mean_interval(values)
    assert (lo, hi) == pytest.approx((6 - half, 6 + half))
    assert how == "Student's t over 3 seeds"
    lo, hi, how = mean_interval(np.arange(10.0), level=0.9, units="trials")
    assert how.startswith("bootstrap BCa over 10 trials") and lo < 4.5 < hi
    assert all(math.isnan(v) for v in mean_interval([4.0])[:2])


# --- the suite file --------------------------------------------------------------------------------------------
STUDY = """\
[study]
name = "{name}"
mode = "evolve"
sampler = "{sampler}"

[base.data]
dataset = "digits"

[base.train]
max_epochs = {epochs}
patience = {epochs}
lr_drops = 0

[base.rank]
measure = "numerical:0.2"

[base.evolve]
max_iterations = 8

[space]
depth = 1
{space}
"""
WIDTH_SPACE = "width = { choices = [24, 48] }\n"
REBUILD_SPACE = 'width = 32\n"evolve.rebuild" = { choices = ["warm", "reinit"] }\n'
SUITE = """\
[suite]
name = "tiny"
description = "A tiny suite on digits."

[questions]
1 = "Does the convergent width follow the initial width?"
2 = "Does the rebuild method matter?"

[[experiment]]
file = "width.toml"
question = 1
seeds = [0, 1]
cost = "a few seconds"
hypotheses = [
  { kind = "trend", x = "width", y = "total_width", alternative = "greater", claim = "the width follows the start" },
  { kind = "association", x = "total_width", y = "generalisation_gap" },
]

[[experiment]]
file = "rebuild.toml"
question = 2
seeds = [0, 1]
hypotheses = [
  { kind = "paired", value = "total_width", condition = "evolve.rebuild", a = "warm", b = "reinit" },
]
"""


def write_suite(folder: Path, suite: str = SUITE, sampler: str = "grid", epochs: int = 2, width_space: str = WIDTH_SPACE,
                rebuild_space: str = REBUILD_SPACE) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "width.toml").write_text(STUDY.format(name="q1_width", sampler=sampler, epochs=epochs, space=width_space))
    (folder / "rebuild.toml").write_text(STUDY.format(name="q2_rebuild", sampler="grid", epochs=epochs, space=rebuild_space))
    (folder / "suite.toml").write_text(suite)
    return folder / "suite.toml"


def test_the_suite_injects_its_seeds_into_the_space_and_nothing_else(tmp_path):
    suite = parse_suite(write_suite(tmp_path))
    width, rebuild = suite.experiments
    assert width.spec.space["seed"] == {"choices": [0, 1]} and "seed" not in width.spec.base
    assert width.spec.seed == 0  # the sampler's seed, which orders the grid, is the file's
    assert (width.declared, rebuild.declared) == (4, 4)
    assert suite.questions == {1: "Does the convergent width follow the initial width?", 2: "Does the rebuild method matter?"}
    assert [h.kind for h in width.hypotheses] == ["trend", "association"] and width.cost == "a few seconds"


def test_a_hypothesis_can_answer_another_question_than_its_experiment(tmp_path):
    """One study can answer two questions (the label-noise grid: complexity, and overfitting): a hypothesis's own
    question places it, the others follow their experiment's."""
    suite = parse_suite(write_suite(tmp_path, SUITE.replace('y = "generalisation_gap" }',
                                                            'y = "generalisation_gap", question = 2 }')))
    width, rebuild = suite.experiments
    assert [width.question_of(k) for k in range(2)] == [1, 2] and width.questions == [1, 2]
    assert rebuild.questions == [2]


BAD = [
    (lambda s: s.replace('name = "tiny"', 'name = "tiny"\ntitle = "x"'), "unknown key suite.title"),
    (lambda s: s.replace('cost = "a few seconds"', 'sead = [0]'), "experiment 1: unknown key sead"),
    (lambda s: s.replace('file = "width.toml"', 'file = "nowhere.toml"'), "no study file at"),
    (lambda s: s.replace('kind = "trend"', 'kind = "trnd"'), "hypotheses[0]: unknown kind 'trnd'"),
    (lambda s: s.replace('x = "width"', 'x = "widths"'), "hypotheses[0]: x = 'widths' is not a key of the study's space"),
    (lambda s: s.replace('y = "total_width", alt', 'y = "width_sum", alt'), "y = 'width_sum' is not a known metric"),
    (lambda s: s.split('[[experiment]]\nfile = "rebuild.toml"')[0] + s[s.index("[[experiment]]"):].split("\n\n")[0],
     "study name 'q1_width' is used by both"),
    (lambda s: s.replace("seeds = [0, 1]\ncost", "seeds = []\ncost"), "seeds must be a non-empty list"),
    (lambda s: s.replace("seeds = [0, 1]\ncost", "seeds = [0, 0]\ncost"), "seeds holds 0 twice"),
    (lambda s: s.replace("seeds = [0, 1]\ncost", "seeds = [-1]\ncost"), "seeds must be integers from 0"),
    (lambda s: s.replace("question = 2", "question = 3"), "question must be a number of [questions] (1, 2)"),
    (lambda s: s.replace('a = "warm"', 'a = "cold"'), "a = 'cold' is not a value of evolve.rebuild"),
    (lambda s: s.replace('y = "generalisation_gap" }', 'y = "generalisation_gap", question = 7 }'),
     "hypotheses[1]: question must be a number of [questions] (1, 2), got 7"),
    (lambda s: s.replace('claim = "the width follows the start"', 'claim = "w", unit = "trial"'),
     "hypotheses[0]: unknown key unit for kind trend"),
    (lambda s: s.replace('x = "width", y', 'x = "width", by = "width", y'), "x = 'width' is also by"),
    (lambda s: s.replace('{ kind = "paired", value = "total_width", condition', '{ kind = "trend", y = "total_width", x')
     .replace(', a = "warm", b = "reinit" }', " }"), "x = 'evolve.rebuild' takes values without an order"),
    (lambda s: s.replace('cost = "a few seconds"', 'show = ["classes", "pie"]'), "show must be a list of classes, heatmaps"),
    (lambda s: s.replace('cost = "a few seconds"', 'classes = { by = "mean" }'), "classes.by must be one of vector, sum"),
    (lambda s: s.replace('cost = "a few seconds"', 'classes = { tol = -1 }'), "classes.tol must be a non-negative number"),
    (lambda s: s.replace('cost = "a few seconds"', 'published = [{ method = "VIB", source = "x", error = 1.6 }]'),
     "published[0]: error must be a fraction in [0, 1] (1.6% is 0.016), got 1.6"),
    (lambda s: s.replace('cost = "a few seconds"', 'published = [{ method = "VIB", error = 0.016 }]'),
     "published[0]: source is required"),
    (lambda s: s.replace('cost = "a few seconds"', 'published = [{ method = "VIB", source = "x", error = 0.01, year = 1 }]'),
     "published[0]: unknown key year"),
]


@pytest.mark.parametrize("change, message", BAD, ids=[m.split(":")[-1].strip()[:30] for _, m in BAD])
def test_a_bad_suite_is_one_line_and_exit_2(tmp_path, capsys, change, message):
    path = write_suite(tmp_path, change(SUITE))
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_suite(path)
    line = one_line_error(capsys, main(["findings", "run", str(path), "--root", str(tmp_path / "runs")]))
    assert line.startswith("rankprune findings: error: ") and message in line
    assert not (tmp_path / "runs").exists()  # refused before anything was created


@pytest.mark.parametrize("study, message", [
    ({"sampler": "random"}, 'study.sampler must be "grid" in a suite'),
    ({"width_space": WIDTH_SPACE + "seed = { choices = [3] }\n"}, "space.seed is set by the suite's seeds"),
])
def test_a_suite_study_must_be_a_grid_without_seeds_of_its_own(tmp_path, study, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_suite(write_suite(tmp_path, **study))


def test_the_runner_flags_override_every_study_and_only_names_known_experiments(tmp_path, capsys):
    path = write_suite(tmp_path)
    for e in with_overrides(parse_suite(path), data_dir="/data", download=False, device="cuda").experiments:
        assert e.spec.base["data"] == {"dataset": "digits", "data_dir": "/data", "download": False}
        assert e.spec.base["device"] == "cuda" and e.spec.base["evolve"] == {"max_iterations": 8}
    line = one_line_error(capsys, main(["findings", "run", str(path), "--root", str(tmp_path / "runs"), "--only", "nope"]))
    assert "--only nope: no such experiment in" in line and line.endswith("it has q1_width, q2_rebuild")
    line = one_line_error(capsys, main(["findings", "run", str(path), "--batch", "0"]))
    assert line == "rankprune findings: error: --batch must be at least 1, got 0"


def test_a_bad_suite_in_a_real_process_is_exit_2_without_a_traceback(tmp_path):
    (tmp_path / "bad.toml").write_text('[suite]\nname = "x"\n[[experiment]]\nfile = "missing.toml"\nquestion = 1\nseeds = [0]\n')
    done = subprocess.run([sys.executable, "-m", "rankprune.cli", "findings", "run", "bad.toml"], cwd=tmp_path,
                          env=child_env(), capture_output=True, text=True, timeout=GUARD_S)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        "rankprune findings: error: bad.toml: experiment 1 (missing.toml): question must be a number of [questions] "
        "(none: add a [questions] table), got 1"]


# --- a real tiny suite -------------------------------------------------------------------------------------------
def child_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}


def quiet(argv: list[str]) -> tuple[int, str]:
    """cli.main in this process, its stderr caught (rich writes to sys.stderr as it stands)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    return code, err.getvalue()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The two-study suite, run in two steps (one experiment with --only, then the rest), reported after each."""
    tmp = tmp_path_factory.mktemp("findings")
    suite = str(write_suite(tmp / "suite"))
    root = str(tmp / "runs")
    steps = {"first": quiet(["findings", "run", suite, "--root", root, "--only", "q1_width"])}
    steps["partial report"] = quiet(["findings", "report", suite, "--root", root, "--out", str(tmp / "partial")])
    steps["rest"] = quiet(["findings", "run", suite, "--root", root])
    steps["again"] = quiet(["findings", "run", suite, "--root", root])
    steps["report"] = quiet(["findings", "report", suite, "--root", root])
    return {"suite": suite, "root": Path(root), "partial": tmp / "partial" / "findings.md",
            "full": Path(root) / "report" / "findings.md", "steps": steps}


def test_findings_run_completes_every_study_and_skips_a_complete_one(tiny):
    for step in ("first", "rest", "again", "report", "partial report"):
        code, err = tiny["steps"][step]
        assert code == 0 and "Traceback" not in err, (step, err)
    first = tiny["steps"]["first"][1]
    assert "suite tiny: 1 of 2 studies" in first and "study 1 of 1: q1_width: complete (4 of 4 trials)" in first
    rest = tiny["steps"]["rest"][1]
    assert "study 1 of 2: q1_width: complete (4 of 4 trials); skipped" in rest
    assert "study 2 of 2: q2_rebuild: complete (4 of 4 trials)" in rest
    assert "study 1 of 2: q1_width: complete (4 of 4 trials); skipped" in tiny["steps"]["again"][1]
    url = f"sqlite:///{tiny['root']}/studies.sqlite3"
    for name in ("q1_width", "q2_rebuild"):
        trials = optuna.load_study(study_name=name, storage=url).trials
        assert len(trials) == 4 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
        assert sorted(t.params["seed"] for t in trials) == [0, 0, 1, 1]


def test_a_partial_suite_reports_what_is_missing_and_the_command_that_runs_it(tiny):
    text = tiny["partial"].read_text()
    command = f"rankprune findings run {tiny['suite']} --root {tiny['root']} --only q2_rebuild"
    assert "## What is missing" in text
    assert f"`q2_rebuild` (question 2): 4 of 4 trials missing (4 not run); run it with `{command}`" in text
    [row] = [line for line in text.splitlines() if line.startswith("| Q2.1 ")]
    assert "not run yet: 4 of 4 trials missing (4 not run)" in row
    assert "over suite tiny (2 tests)" in text  # Q1's two hypotheses are the family; Q2's is not in it
    assert text.count("![") == 2 and "evolve.rebuild warm, seed 0: not run" in text


def test_the_full_report_states_every_verdict_and_links_every_figure_as_a_png(tiny):
    report = tiny["full"]
    text = report.read_text()
    assert text.startswith("# Findings: tiny\n\nA tiny suite on digits.")
    assert f"rankprune findings run {tiny['suite']} --root {tiny['root']}\n" in text
    assert f"rankprune findings report {tiny['suite']} --root {tiny['root']}\n" in text
    assert "## What is missing" not in text
    assert text.index("## Verdicts") < text.index("## Question 1: ") < text.index("## Question 2: ")
    rows = [line for line in text.splitlines() if re.match(r"\| Q\d\.\d ", line)]
    assert [r.split("|")[1].strip() for r in rows] == ["Q1.1", "Q1.2", "Q2.1"]
    assert all(re.search(r"\| (supported|not significant|not answered|no test): ", r) for r in rows)
    assert text.count("**Verdict:** ") == 3
    assert f"Produced by `rankprune findings run {tiny['suite']} --root {tiny['root']} --only q2_rebuild`" in text
    linked = LINK.findall(text)
    on_disk = {p.name for p in report.parent.glob("*.png")}
    assert sorted(linked) == sorted(on_disk) == ["q1_width-1.png", "q1_width-2.png", "q2_rebuild-1.png"]
    for name in linked:
        path = report.parent / name
        assert path.read_bytes()[:8] == PNG_MAGIC
        with Image.open(path) as im:
            im.verify()


def test_an_experiment_shows_its_classes_its_overfitting_pairs_and_published_results_beside_its_own(tiny, tmp_path):
    """The suite's `show` and `published` keys draw the study report's sections into the experiment's section, once
    (in its own question), and set published rows beside the study's own summary; a hypothesis on a quantity the
    trials never recorded (the scratch control, without evolve.scratch) is "no test", saying why, with no figure."""
    text = Path(tiny["suite"]).read_text()
    text = text.replace('cost = "a few seconds"', 'cost = "a few seconds"\nshow = ["classes", "overfitting_pairs"]\n'
                        'classes = { by = "sum", tol = 4 }\npublished = [{ method = "Someone 2020", source = "A paper", '
                        'widths = "7-3", error = 0.0123, note = "full data" }]')
    text = text.replace('{ kind = "paired", value = "total_width", condition = "evolve.rebuild", a = "warm", b = "reinit" },',
                        '{ kind = "paired", value = "total_width", condition = "evolve.rebuild", a = "warm", b = "reinit" },\n'
                        '  { kind = "versus", a = "test_acc", b = "scratch_test_acc" },')
    suite = Path(tiny["suite"]).parent / "shown.toml"
    suite.write_text(text)
    out = tmp_path / "report"
    code, err = quiet(["findings", "report", str(suite), "--root", str(tiny["root"]), "--out", str(out)])
    assert code == 0, err
    report = (out / "findings.md").read_text()
    q1 = report[report.index("## Question 1: "):report.index("## Question 2: ")]
    assert report.count("#### Equivalence classes of convergent rank") == 1 and "#### Equivalence classes" in q1
    assert "`rankprune study classes q1_width --by sum --tol 4`" in q1
    assert q1.count("#### Overfitting pairs") == 1 and "such pairs the wider network" in q1
    [ours] = [line for line in q1.splitlines() if line.startswith("| rankprune (this suite, q1_width)")]
    [theirs] = [line for line in q1.splitlines() if line.startswith("| Someone 2020")]
    assert "| 7-3 " in theirs and "| 1.23 " in theirs and "A paper; full data" in theirs
    trials = optuna.load_study(study_name="q1_width", storage=f"sqlite:///{tiny['root']}/studies.sqlite3").trials
    error = 100 * (1 - np.mean([np.mean([t.user_attrs["test_acc"] for t in trials if t.params["seed"] == s]) for s in (0, 1)]))
    assert f"| {error:.2f} [" in ours
    [row] = [line for line in report.splitlines() if line.startswith("| Q2.2 ")]
    assert "no test: no trial recorded scratch_test_acc" in row
    assert "q2_rebuild-2.png" not in report and "Figure not drawn" not in report


def test_an_interrupted_suite_prints_the_command_that_continues_it(tmp_path, monkeypatch):
    import shlex

    from rankprune.runfolder import EPOCHS, RunFolder

    suite = write_suite(tmp_path / "suite")
    root = tmp_path / "runs"
    append = RunFolder.append

    def interrupted(self, table, row):  # Ctrl-C (SIGTERM becomes the same) in trial 1's first epoch
        if table == EPOCHS and self.path.name == "trial-0001":
            raise KeyboardInterrupt
        return append(self, table, row)

    monkeypatch.setattr(RunFolder, "append", interrupted)
    code, err = quiet(["findings", "run", str(suite), "--root", str(root), "--only", "q1_width"])
    assert code == 130, err
    [line] = [line for line in err.splitlines() if "Continue with: " in line]
    argv = shlex.split(line.split("Continue with: ", 1)[1])
    assert argv == ["rankprune", "findings", "run", str(suite), "--root", str(root), "--only", "q1_width"]
    monkeypatch.undo()
    code, err = quiet(argv[1:])
    assert code == 0 and "retrying 1 trial(s) interrupted earlier first, with the same parameters: #1" in err
    trials = optuna.load_study(study_name="q1_width", storage=f"sqlite:///{root}/studies.sqlite3").trials
    assert trials[1].state == optuna.trial.TrialState.FAIL and trials[1].user_attrs["fail_reason"].startswith("interrupted")
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 4 and len({cell_key(t.params) for t in complete}) == 4
    assert [t.user_attrs.get("retry_of") for t in complete if t.params == trials[1].params] == [1]


def test_each_cell_reads_as_done_or_why_not_and_only_killed_trials_are_retried(tmp_path):
    from optuna.distributions import CategoricalDistribution

    from rankprune.findings.runner import retry_killed

    width = parse_suite(write_suite(tmp_path)).experiments[0]  # cells: width 24 or 48 x seed 0 or 1
    study = optuna.create_study()
    space = {"width": CategoricalDistribution([24, 48]), "seed": CategoricalDistribution([0, 1])}
    for (w, seed), state, reason in [((24, 0), "COMPLETE", None), ((24, 1), "FAIL", None),
                                     ((48, 0), "FAIL", "diverged: the training loss became NaN or infinite"),
                                     ((48, 1), "FAIL", "interrupted (Ctrl-C or SIGTERM) before it finished")]:
        study.add_trial(optuna.trial.create_trial(
            params={"width": w, "seed": seed}, distributions=space, state=optuna.trial.TrialState[state],
            value=1.0 if state == "COMPLETE" else None, user_attrs={"fail_reason": reason} if reason else {}))
    progress = grid_progress(width.spec, study.trials)
    assert [(c.params, c.state) for c in progress.cells] == [
        ({"width": 24, "seed": 0}, "done"), ({"width": 24, "seed": 1}, "killed"),
        ({"width": 48, "seed": 0}, "failed"), ({"width": 48, "seed": 1}, "interrupted")]
    assert progress.done == 1 and not progress.complete and len(progress.runnable) == 2
    assert progress.cells[2].reason.startswith("diverged")
    assert retry_killed(study, width) == [1]  # not the diverged one: it would diverge again
    assert grid_progress(width.spec, study.trials).cells[1].state == "running"  # its retry waits
    assert retry_killed(study, width) == []  # once


# --- resuming after SIGKILL ----------------------------------------------------------------------------------
def complete_trials(url: str, name: str) -> list:
    """The study's COMPLETE trials, read without creating anything (the child may be creating Optuna's tables)."""
    from rankprune.study import load_study

    try:
        study = load_study(name, url, read_only=True)
    except ConfigError:  # no storage, no tables or no study yet
        return []
    return [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]


# batch 3 (12 s) runs with `-m slow`: the default suite keeps a SIGKILLed batched worker in tests/test_killed_worker.py
@pytest.mark.parametrize("batch", ["1", pytest.param("3", marks=pytest.mark.slow)])
def test_a_suite_killed_outright_resumes_without_running_a_finished_trial_again(tmp_path, batch):
    # 8 cells of a few tenths of a second each, so the kill lands while cells remain: one at a time, in the trial
    # after the first; by threes, in the second of three batches, leaving its trials RUNNING that no process runs
    # (with two batches only, a loaded machine could see the second batch finish between the poll and the kill)
    suite = write_suite(tmp_path / "suite", epochs=12, width_space="width = { choices = [24, 32, 40, 48] }\n",
                        suite=SUITE.split("[[experiment]]\nfile = \"rebuild.toml\"")[0])
    with (suite.parent / "width.toml").open("a") as f:  # heartbeats every second, stale after 2
        f.write("\n[storage]\nheartbeat_interval = 1\ngrace_period = 2\n")
    root = tmp_path / "runs"
    url = f"sqlite:///{root}/studies.sqlite3"
    run = ["findings", "run", str(suite), "--root", str(root), "--batch", batch]
    child = subprocess.Popen([sys.executable, "-m", "rankprune.cli", *run], env=child_env(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + GUARD_S
        while not (root / "studies.sqlite3").is_file() or not complete_trials(url, "q1_width"):
            assert child.poll() is None, "the run ended before a trial finished"
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=GUARD_S)
    # Read through a writable connection: a SIGKILL that lands mid-write leaves SQLite a hot journal, which only a
    # writer rolls back (a read-only one, as complete_trials opens, then sees no storage at all)
    killed = optuna.load_study(study_name="q1_width", storage=url)
    before = {t.number: cell_key(t.params) for t in killed.trials if t.state == optuna.trial.TrialState.COMPLETE}
    assert 1 <= len(before) < 8, "the kill should land mid-suite"
    dead = [t.number for t in optuna.load_study(study_name="q1_width", storage=url).trials
            if t.state == optuna.trial.TrialState.RUNNING]
    # one killed inside Optuna's ask(), before the grid numbered it, holds no cell: failed, and not retried
    numbered = [t.number for t in optuna.load_study(study_name="q1_width", storage=url).trials
                if t.number in dead and "grid_id" in t.system_attrs]

    time.sleep(3)  # past the grace period: the killed worker's trials are stale
    code, err = quiet(run)
    assert code == 0, err
    study = optuna.load_study(study_name="q1_width", storage=url)
    assert not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    # the dead worker's trials: failed as stale, each retried once (and not run again by the sampler as well)
    assert all(study.trials[n].state == optuna.trial.TrialState.FAIL for n in dead)
    retries = [t.user_attrs.get("retry_of") for t in study.trials if "retry_of" in t.user_attrs]
    assert sorted(retries) == sorted(numbered)  # one killed between its ask and its parameters included
    after = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    cells = [cell_key({"width": w, "seed": s}) for w in (24, 32, 40, 48) for s in (0, 1)]
    assert sorted(cell_key(t.params) for t in after) == sorted(cells)  # every cell complete exactly once
    for number, key in before.items():  # and a trial finished before the kill is the one that holds its cell
        assert [t.number for t in after if cell_key(t.params) == key] == [number]
    progress = grid_progress(parse_suite(suite).experiments[0].spec, study.trials)
    assert progress.complete and progress.done == 8


def test_a_study_whose_space_spells_out_the_widths_keeps_the_chosen_widths_beside_that_parameter():
    """q8_lenet's space is widths = "300-100": the parameter "widths" is the start, the attribute "widths" the chosen
    widths. The grid matches on the parameter; every width the tests read comes from the attribute."""
    from rankprune.findings.frame import with_derived

    frame = pd.DataFrame([{"number": 0, "param_widths": "300-100", "param_seed": 0, "widths": [130, 20],
                           "initial_widths": [300, 100], "censored": [None, None], "ranks": [130, 20]}])
    out = with_derived(frame, "evolve")
    assert out.loc[0, "widths"] == "300-100" and out.loc[0, "chosen_widths"] == [130, 20]
    assert (out.loc[0, "total_width"], out.loc[0, "last_width"], out.loc[0, "initial_total_width"]) == (150, 20, 400)
    assert out.loc[0, "censored"] == [None, None] and out.attrs["params"] == ["widths", "seed"]


def test_a_suite_that_changes_a_studys_choices_is_one_line_and_runs_nothing(tiny, tmp_path):
    """More seeds, or a wider grid, for a study that already ran: Optuna cannot change a categorical parameter's
    choices within a study. The runner says so in one line (exit 2) before any trial, and the storage keeps its
    trials as they were."""
    import shutil

    root = tmp_path / "runs"
    shutil.copytree(tiny["root"], root)
    suite = Path(tiny["suite"]).parent / "more_seeds.toml"
    suite.write_text(Path(tiny["suite"]).read_text().replace("seeds = [0, 1]\ncost", "seeds = [0, 1, 2]\ncost"))
    url = f"sqlite:///{root}/studies.sqlite3"
    before = len(optuna.load_study(study_name="q1_width", storage=url).trials)
    code, err = quiet(["findings", "run", str(suite), "--root", str(root)])
    assert code == 2 and "Traceback" not in err
    last = [line for line in err.splitlines() if line.strip()][-1]
    assert last.endswith("study 'q1_width' in " + url + " ran seed over [0, 1]; this file gives [0, 1, 2], "
                                        "and an Optuna study cannot change a parameter's choices: run the new grid as a "
                                        "study of its own (another study.name), or go back to the study's choices")
    assert len(optuna.load_study(study_name="q1_width", storage=url).trials) == before


def test_include_censored_keeps_the_runs_whose_widths_are_bounds_for_an_outcome_that_is_no_width():
    """The scaling grid's narrow starts stay at their start (censored), yet the accuracy they reach there is measured:
    include_censored keeps them and says how many, where the default leaves them out (here: not answered)."""
    rows = [{"number": n, "seed": s, "width": w, "test_acc": 0.9 + 0.01 * w + 0.001 * s,
             "censored": ["initial"] if w < 4 else [None]} for n, (s, w) in enumerate(product(range(3), (1, 2, 3, 4)))]
    frame = pd.DataFrame(rows)
    frame.attrs["params"] = ["width", "seed"]
    h = Hypothesis("trend", {"x": "width", "y": "test_acc"}, "accuracy rises with width", "greater")
    [left_out] = evaluate(frame, h).tested
    assert left_out.censored == 9 and not left_out.answered
    [kept] = evaluate(frame, dataclasses.replace(h, include_censored=True)).tested
    assert kept.answered and kept.verdict.p_value == pytest.approx(1 / 24 ** 3)
    assert "9 runs whose widths are bounds kept" in kept.verdict.text() and kept.kept == 9 and kept.censored == 0


def test_include_censored_is_refused_for_a_width(tmp_path):
    text = SUITE.replace('y = "total_width", alternative = "greater", claim', 'y = "total_width", alternative = "greater", '
                         'include_censored = true, claim')
    with pytest.raises(ConfigError, match="include_censored keeps runs whose widths are bounds, so its outcome may not "
                                          r"be a width \(total_width\)"):
        parse_suite(write_suite(tmp_path, text))


def test_the_committed_suite_parses():
    """studies/findings/suite.toml and every study file it names pass every check (a setting added to one study,
    as task_sampling was, must not part a law's studies)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    suite = parse_suite(root / "studies" / "findings" / "suite.toml")
    assert len(suite.experiments) == 16 and suite.laws and suite.baselines
