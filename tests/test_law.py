"""A law of the convergent width tested on settings it did not see (issue 20, question 7): the suite's [[law]], the
fit, leave one out, held-out combinations, censoring, extrapolation and the report's section.

Everything runs on synthetic trials tables (no training): a suite of three grid studies on digits (classes, label
noise, and classes x label noise held out) whose widths follow a known power law, parsed from real files.
"""

from __future__ import annotations

import math
import re
from itertools import product
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cli_checks import one_line_error
from rankprune.cli import main
from rankprune.config import ConfigError
from rankprune.findings import parse_suite
from rankprune.findings.law import (HeldOut, combine, evaluate_law, fit_law, grid_settings, law_sentence,
                                    observations)

STUDY = """\
[study]
name = "{name}"
mode = "evolve"
sampler = "grid"

[base.data]
dataset = "digits"
{base}
[base.model]
width = {width}

[space]
depth = 2
{space}
"""
SUITE = """\
[suite]
name = "lawful"

[questions]
2 = "Does the width match the task?"
7 = "A law, tested on settings it did not see"

[[experiment]]
file = "classes.toml"
question = 2
seeds = [0, 1, 2]
hypotheses = [{ kind = "trend", x = "data.classes", y = "total_width" }]

[[experiment]]
file = "noise.toml"
question = 2
seeds = [0, 1, 2]

[[experiment]]
file = "combos.toml"
question = 7
seeds = [0, 1, 2]

[[law]]
name = "width_law"
question = 7
y = "total_width"
knobs = [{ param = "data.classes", transform = "log" }, { param = "data.label_noise", transform = "linear" }]
fit = ["classes", "noise"]
held_out = ["combos"]
tolerance = 0.15
"""
CLASSES = [3, 5, 7, 10]
NOISE = [0.0, 0.1, 0.25, 0.5]
COMBOS = '"data.classes" = { choices = [5, 7] }\n"data.label_noise" = { choices = [0.1, 0.25] }\n'


def write(folder: Path, suite: str = SUITE, combos: str = COMBOS, combos_width: int = 32, noise_base: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    studies = {"classes": ('"data.classes" = { choices = [3, 5, 7, 10] }\n', 32, ""),
               "noise": ('"data.label_noise" = { choices = [0.0, 0.1, 0.25, 0.5] }\n', 32, noise_base),
               "combos": (combos, combos_width, "")}
    for name, (space, width, base) in studies.items():
        (folder / f"{name}.toml").write_text(STUDY.format(name=name, space=space, width=width, base=base))
    (folder / "suite.toml").write_text(suite)
    return folder / "suite.toml"


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    return parse_suite(write(tmp_path_factory.mktemp("law")))


def law_width(classes: float, noise: float) -> float:
    """The planted law: 100 units at 10 classes and no noise, classes^0.8, exp(1.5 noise)."""
    return 100.0 * (classes / 10) ** 0.8 * math.exp(1.5 * noise)


SEED_FACTOR = {0: 0.97, 1: 1.0, 2: 1.03}  # each seed's runs a little narrower or wider, alike at every setting


def table(param: str, values: list, width=lambda s, v: 0.0, censored=(), seeds=(0, 1, 2), **fixed) -> pd.DataFrame:
    """A trials table (frame.trials_table's columns the law reads) of a study varying `param` over `values`;
    width(seed, value) gives total_width; (seed, value) in `censored` is a '>= w' bound."""
    rows = [{"number": n, "seed": s, param: v, "total_width": float(width(s, v)),
             "censored": ["initial", None] if (s, v) in censored else [None, None]}
            for n, (s, v) in enumerate(product(seeds, values))]
    frame = pd.DataFrame(rows)
    frame.attrs["params"] = [param, "seed"]
    return frame


def combos_table(factor=lambda c, n: 1.0, seeds=(0, 1, 2)) -> pd.DataFrame:
    rows = [{"number": i, "seed": s, "data.classes": c, "data.label_noise": n,
             "total_width": law_width(c, n) * SEED_FACTOR[s] * factor(c, n), "censored": [None, None]}
            for i, (s, c, n) in enumerate(product(seeds, [5, 7], [0.1, 0.25]))]
    return pd.DataFrame(rows)


def fit_observations(suite, classes_censored=(), noise_width=None, seed_factor=SEED_FACTOR):
    law = suite.laws[0]
    e = {x.name: x for x in suite.experiments}
    classes = table("data.classes", CLASSES, lambda s, c: law_width(c, 0.0) * seed_factor[s], classes_censored)
    noise = table("data.label_noise", NOISE, noise_width or (lambda s, n: law_width(10, n) * seed_factor[s]))
    return combine([observations(classes, e["classes"], law), observations(noise, e["noise"], law)], law)


def held(suite, frame: pd.DataFrame) -> list[HeldOut]:
    law, combos = suite.laws[0], suite.experiments[2]
    return [HeldOut("combos", observations(frame, combos, law), grid_settings(combos, law), 3)]


# --- the suite file --------------------------------------------------------------------------------------------
def test_a_law_is_parsed_with_its_reference_read_from_the_study_files(suite):
    [law] = suite.laws
    assert (law.name, law.question, law.y, law.tolerance) == ("width_law", 7, "total_width", 0.15)
    assert [(k.param, k.transform) for k in law.knobs] == [("data.classes", "log"), ("data.label_noise", "linear")]
    assert (law.fit, law.held_out) == (("classes", "noise"), ("combos",))
    # data.classes unset keeps all of digits' 10 classes; data.label_noise unset is the config's default 0
    assert law.reference == {"data.classes": 10.0, "data.label_noise": 0.0}
    assert [e.questions for e in suite.experiments] == [[2], [2], [7]]  # a study only a law reads: its own question


def test_knob_values_come_from_the_trial_else_the_study_file(tmp_path):
    """A knob a study does not vary takes its [base] value: here the noise study runs at 7 classes."""
    s = parse_suite(write(tmp_path, noise_base="classes = 7\n",
                          suite=SUITE.replace('fit = ["classes", "noise"]', 'fit = ["noise", "classes"]')))
    law = s.laws[0]
    obs = observations(table("data.label_noise", NOISE, lambda s_, n: 50.0), s.experiments[1], law)
    assert set(obs["data.classes"]) == {7.0} and sorted(set(obs["data.label_noise"])) == NOISE
    assert law.reference == {"data.classes": 7.0, "data.label_noise": 0.0}  # the first fit study's [base]


def test_the_default_setting_every_fit_study_ran_is_one_observation_per_seed(suite):
    obs = fit_observations(suite)
    default = obs[(obs["data.classes"] == 10) & (obs["data.label_noise"] == 0)]
    assert list(default["seed"]) == [0, 1, 2] and list(default["runs"]) == [2, 2, 2]
    assert len(obs) == 3 * 7  # 4 + 4 settings, one shared


BAD = [
    (lambda s: s.replace("tolerance = 0.15", "tolerance = 0.15\nslack = 1"), "law 1: unknown key slack"),
    (lambda s: s.replace('fit = ["classes", "noise"]', 'fit = ["classes", "nois"]'),
     "fit: no experiment of the suite runs study 'nois'; it has classes, noise, combos"),
    (lambda s: s.replace('"data.label_noise", transform = "linear"', '"data.label_noise", transform = "log"'),
     'knob data.label_noise takes 0.0 in study classes; transform "log" needs values above 0'),
    (lambda s: s.replace('transform = "linear"', 'transform = "sqrt"'), "knobs[1]: transform must be one of log, linear"),
    (lambda s: s.replace('held_out = ["combos"]', 'held_out = ["combos", "noise"]'),
     "study 'noise' is both fitted and held out"),
    (lambda s: s.replace('y = "total_width"', 'y = "total_widths"'), "y = 'total_widths' is not a known metric"),
    (lambda s: s.replace("question = 7\ny", "question = 8\ny"), "question must be a number of [questions] (2, 7), got 8"),
    (lambda s: s.replace("tolerance = 0.15", "tolerance = 15"), "tolerance must be a relative error between 0 and 1"),
    (lambda s: s.replace('param = "data.classes"', 'param = "data.klasses"'), "knob 'data.klasses' is not a setting of a run"),
    (lambda s: s.replace('{ param = "data.classes", transform = "log" }, ', ""),
     "study classes varies data.classes, which is no knob of the law"),
    (lambda s: s.replace('transform = "linear" }]', 'transform = "linear" }, { param = "data.tasks", transform = "log" }]'),
     "knob data.tasks takes one value in every fit study; the law cannot fit its coefficient"),
    (lambda s: s + s[s.index("[[law]]"):], "law name 'width_law' is used twice"),
]


@pytest.mark.parametrize("change, message", BAD, ids=[m.split(":")[-1].strip()[:30] for _, m in BAD])
def test_a_bad_law_is_one_line_and_exit_2(tmp_path, capsys, change, message):
    path = write(tmp_path, change(SUITE))
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_suite(path)
    line = one_line_error(capsys, main(["findings", "run", str(path), "--root", str(tmp_path / "runs")]))
    assert line.startswith("rankprune findings: error: ") and message in line
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("study, message", [
    ({"combos_width": 64}, "study combos runs at model.width = 64 and classes at 32; a law's studies may differ only"),
    ({"combos": COMBOS + "width = { choices = [32, 64] }\n"}, "study combos varies width, which is no knob of the law"),
])
def test_a_held_out_study_must_run_like_the_fit_studies_but_for_the_knobs(tmp_path, study, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_suite(write(tmp_path, **study))


# --- the fit and its tests ---------------------------------------------------------------------------------------
def test_the_fit_recovers_the_coefficients_of_a_planted_power_law(suite):
    law = suite.laws[0]
    fit = fit_law(fit_observations(suite), law)
    # each seed's factor is the same at every setting, so it moves only the intercept: by its mean log
    offset = np.mean([math.log(f) for f in SEED_FACTOR.values()])
    assert fit.coefficients == pytest.approx((math.log(100) - 0.8 * math.log(10) + offset, 0.8, 1.5), rel=1e-9)
    assert fit.identified and fit.n == 21
    assert fit.ranges == {"data.classes": (3.0, 10.0), "data.label_noise": (0.0, 0.5)}
    assert fit.predict({"data.classes": 5.0, "data.label_noise": 0.25}) == pytest.approx(
        law_width(5, 0.25) * math.exp(offset))
    # a different law is recovered as itself, not as the planted one
    other = fit_observations(suite, seed_factor={0: 1.0, 1: 1.0, 2: 1.0},
                             noise_width=lambda s, n: 100.0 * math.exp(-0.5 * n))
    assert fit_law(other, law).coefficients[2] == pytest.approx(-0.5, rel=1e-9)


def test_a_held_out_setting_off_by_30_percent_fails_and_one_off_by_4_percent_passes(suite):
    law = suite.laws[0]
    planted = {(5, 0.1): 1.30, (7, 0.25): 1.04}
    outcome = evaluate_law(law, fit_observations(suite), held(suite, combos_table(lambda c, n: planted.get((c, n), 1.0))))
    combos = {p.label: p for p in outcome.predictions if p.test == "combination"}
    assert [combos[k].setting for k in ("c1", "c4")] == [{"data.classes": 5.0, "data.label_noise": 0.1},
                                                        {"data.classes": 7.0, "data.label_noise": 0.25}]
    # the prediction is exp(fit): the seeds' geometric mean, a hair below their mean (the seed factors' offset)
    geometric = math.exp(np.mean([math.log(f) for f in SEED_FACTOR.values()]))
    assert combos["c1"].error == pytest.approx(geometric / 1.30 - 1, rel=1e-9) and not combos["c1"].within(0.15)
    assert combos["c4"].error == pytest.approx(geometric / 1.04 - 1, rel=1e-9) and combos["c4"].within(0.15)
    assert combos["c1"].within_spread is False  # 30% against a 3% spread across seeds
    assert combos["c2"].within_spread is True and combos["c2"].error == pytest.approx(geometric - 1, rel=1e-9)
    assert combos["c1"].sd == pytest.approx(np.std([law_width(5, 0.1) * 1.3 * f for f in SEED_FACTOR.values()], ddof=1))
    assert [p.label for p in outcome.failing] == ["c1"]
    sentence = law_sentence(outcome)
    assert sentence.startswith("the law does not predict within 15% everywhere: within 15% at 9 of 10 held-out "
                               "settings (leave one out: 6 of 6, combination: 3 of 4); it fails at c1 "
                               "(data.classes 5, data.label_noise 0.1): -23%")
    # the effect removed, the verdict flips
    clean = evaluate_law(law, fit_observations(suite), held(suite, combos_table()))
    assert clean.failing == [] and law_sentence(clean).startswith("the law predicts within 15% at all 10 held-out settings")


def test_leave_one_out_refits_without_each_value_and_marks_extrapolation(suite):
    law = suite.laws[0]
    outcome = evaluate_law(law, fit_observations(suite), held(suite, combos_table()))
    loo = {p.label: p for p in outcome.predictions if p.test == "leave one out"}
    # every value but the reference (10 classes, no noise): 3 + 3 settings
    assert sorted(loo) == ["classes 3", "classes 5", "classes 7", "label_noise 0.1", "label_noise 0.25",
                           "label_noise 0.5"]
    assert loo["classes 3"].extrapolated == ("data.classes",) and loo["classes 5"].extrapolated == ()
    assert loo["label_noise 0.5"].extrapolated == ("data.label_noise",)
    # the law is exact, so it predicts what it did not see (as the seeds' geometric mean: exp of the fit)
    geometric = math.exp(np.mean([math.log(f) for f in SEED_FACTOR.values()]))
    assert [p.error for p in loo.values()] == pytest.approx([geometric - 1] * 6, rel=1e-9)
    # a held-out value's own runs are not in its fit: a planted jump at 0.5 noise is not predicted
    jump = fit_observations(suite, noise_width=lambda s, n: law_width(10, n) * SEED_FACTOR[s] * (1.5 if n == 0.5 else 1))
    [at] = [p for p in evaluate_law(law, jump, []).predictions if p.label == "label_noise 0.5"]
    assert at.error == pytest.approx(geometric / 1.5 - 1, rel=1e-9)
    # a combination outside the fitted range is an extrapolation too
    far = [HeldOut("combos", observations(combos_table(), suite.experiments[2], law),
                   [{"data.classes": 7.0, "data.label_noise": 0.75}], 3)]
    [p] = [p for p in evaluate_law(law, fit_observations(suite), far).predictions if p.test == "combination"]
    assert p.extrapolated == ("data.label_noise",) and p.n + p.censored == 0
    assert outcome.table().set_index("point").loc["classes 3", "extrapolated"] == "classes"


def test_censored_runs_are_left_out_of_the_fit_and_counted(suite):
    law = suite.laws[0]
    censored = {(0, 3), (0, 7), (1, 7), (2, 7)}  # one seed at 3 classes; every seed at 7

    def width(s, c):
        return 10_000.0 if (s, c) in censored else law_width(c, 0.0)

    e = suite.experiments[0]
    classes = observations(table("data.classes", CLASSES, width, censored), e, law)
    noise = observations(table("data.label_noise", NOISE, lambda s, n: law_width(10, n)), suite.experiments[1], law)
    obs = combine([classes, noise], law)
    outcome = evaluate_law(law, obs, [])
    assert (outcome.observations, outcome.censored, outcome.fit.n) == (21, 4, 17)
    assert outcome.fit.coefficients[1:] == pytest.approx((0.8, 1.5), rel=1e-9)  # the bounds of 10,000 are not in it
    loo = {p.label: p for p in outcome.predictions}
    assert (loo["classes 3"].n, loo["classes 3"].censored) == (2, 1) and loo["classes 3"].judged
    assert loo["classes 3"].bounds == "seed 0: >= 10000"
    assert (loo["classes 7"].n, loo["classes 7"].censored, loo["classes 7"].judged) == (0, 3, False)
    assert outcome.table().set_index("point").loc["classes 7", "status"].startswith(
        "censored: only bounds (seed 0: >= 10000, seed 1: >= 10000, seed 2: >= 10000); the prediction lies below them")
    assert "1 held-out setting(s) only bounded (every run censored), not judged" in law_sentence(outcome)


def test_settings_not_run_yet_and_settings_a_fit_study_ran_are_not_judged(suite):
    law, combos = suite.laws[0], suite.experiments[2]
    partial = combos_table(seeds=(0,))  # one seed of three so far
    outcome = evaluate_law(law, fit_observations(suite), held(suite, partial[partial["data.classes"] == 5]))
    status = outcome.table().set_index("point")["status"]
    assert list(status[["c1", "c2", "c3", "c4"]]) == ["not run yet: 1 of 3 seeds", "not run yet: 1 of 3 seeds",
                                                      "not run yet", "not run yet"]
    assert law_sentence(outcome).endswith("; 4 held-out setting(s) not run yet")
    assert law_sentence(None, "fit studies not complete: noise") == "not run yet: fit studies not complete: noise"
    # a held-out study's cell that a fit study ran is shown, and not counted as held out
    seen = [HeldOut("combos", observations(combos_table(), combos, law), [{"data.classes": 5.0, "data.label_noise": 0.0}], 3)]
    [p] = [p for p in evaluate_law(law, fit_observations(suite), seen).predictions if p.test == "combination"]
    assert p.seen and not p.judged


# --- the report --------------------------------------------------------------------------------------------------
def test_the_report_section_states_the_law_its_table_figure_and_verdict_and_no_p_value(suite, tmp_path):
    from PIL import Image

    from rankprune.report.document import _Document
    from rankprune.report.law import LawResult, law_rows, law_section

    law = suite.laws[0]
    outcome = evaluate_law(law, fit_observations(suite), held(suite, combos_table(lambda c, n: 1.3 if c == 5 else 1.0)))
    doc = _Document(tmp_path, figure_dir="")
    run, report = ["rankprune", "findings", "run", "suite.toml"], ["rankprune", "findings", "report", "suite.toml"]
    law_section(doc, LawResult(law, "Q7.1", outcome, ()), run, report)
    text = "\n".join(doc.lines)
    offset = np.mean([math.log(f) for f in SEED_FACTOR.values()])
    assert f"log(total_width) = {math.log(100) - 0.8 * math.log(10) + offset:.3g} + 0.8·log(data.classes) + " \
           "1.5·data.label_noise" in text
    assert "total_width = " in text and "data.classes^0.8 × exp(1.5 × data.label_noise)" in text
    assert "`rankprune findings run suite.toml --only classes noise combos`" in text
    assert "| leave one out | classes 3 " in text and "| combination   | c1 " in text
    assert f"**Verdict:** {law_sentence(outcome)}" in text and "it fails at c2 (" in law_sentence(outcome)
    with Image.open(tmp_path / "width_law-law.png") as im:
        im.verify()
    [row] = law_rows([LawResult(law, "Q7.1", outcome, ())])
    assert (row["id"], row["p"], row["Holm p"]) == ("Q7.1", "", "")  # no p-value: no member of the Holm family
    assert row["effect (95% CI)"] == "within 15% at 8 of 10 held-out settings"
    # not fitted while a fit study is incomplete: what is missing and the command that runs it
    doc = _Document(tmp_path / "partial", figure_dir="")
    waiting = LawResult(law, "Q7.1", None, (("noise", "12 of 12 trials missing (12 not run)"),))
    law_section(doc, waiting, run, report)
    text = "\n".join(doc.lines)
    assert "`noise` (fit): 12 of 12 trials missing (12 not run); run it with " \
           "`rankprune findings run suite.toml --only noise`" in text
    assert "**Verdict:** not run yet: fit studies not complete: noise (12 of 12 trials missing (12 not run))" in text
    assert law_rows([waiting])[0]["verdict"].startswith("not run yet")


@pytest.mark.parametrize("noise_base", ['task_sampling = "fixed"\n', "task_samples = 5000\n"])
def test_how_tasks_are_drawn_does_not_part_studies_that_draw_none(tmp_path, noise_base):
    """Without --tasks (or with the fixed tasks of format 4) task_sampling and task_samples change nothing a run
    computes, so a study that spells them out still fits one law with studies that leave them at their defaults."""
    suite = parse_suite(write(tmp_path, noise_base=noise_base))
    assert [law.name for law in suite.laws] == ["width_law"]
