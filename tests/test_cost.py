"""Question 3's cost comparison (issue 20): the original notebook's loop as a baseline (rankprune.baselines.original),
a suite's [[baseline]] (findings/baseline.py) that `findings run` runs resumably, and the report's cost section
(report/cost.py).

The loop is tested on a tiny separable problem against hand-counted FLOPs; the runner and the report on a real tiny
suite on digits (one study of warm and reinit with scratch controls, 2 seeds, 2 epochs per iteration) and its
baseline, run once per module.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from PIL import Image

from cli_checks import one_line_error
from rankprune.baselines import original
from rankprune.baselines.original import epoch_flops, train_original
from rankprune.cli import main
from rankprune.config import ConfigError
from rankprune.data import from_tensors
from rankprune.findings import parse_suite
from rankprune.report.cost import ORIGINAL, Curve, cost_table

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
LINK = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)")


# --- the loop on a tiny problem ----------------------------------------------------------------------------------
def separable(n: int = 300, features: int = 4, classes: int = 3, seed: int = 0):
    """n rows of `features` features in `classes` well-separated clusters: the loop's first network (width 32) passes
    its second check (test accuracy 1.0, no gain) at epoch 6; its hidden layers then have rank at most 4."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    centres = 4.0 * torch.eye(classes, features)
    x = centres[y] + 0.1 * torch.randn(n, features, generator=g)
    return from_tensors((x, y), (x[:6], y[:6]), (x, y))


def hand_flops(n_in: int, widths: list[int], n_out: int, samples: int) -> int:
    """2 FLOPs per multiply-add of every weight, forward; training 3x that; per sample of both passes."""
    dims = [n_in, *widths, n_out]
    forward = sum(2 * a * b for a, b in zip(dims[:-1], dims[1:]))
    return 3 * forward * 2 * samples


def test_the_loops_flops_are_three_forward_passes_per_sample_of_both_passes():
    data = separable()
    assert epoch_flops(data, [32, 32]) == 4_492_800  # 3 x 2 (4*32 + 32*32 + 32*3) x (300 at batch 64 + 300 at 128)
    result = train_original(data, depth=2, seed=0, width=32, budget_flops=12 * 4_492_800)
    widths = [tuple(row["widths"]) for row in result.log]
    assert len(set(widths)) > 1  # it rebuilt at narrower widths, whose epochs cost less
    total = 0
    for row in result.log:
        expected = hand_flops(4, row["widths"], 3, 300)
        total += expected
        assert row["flops"] == expected and row["cumulative_flops"] == total


def test_it_rebuilds_at_the_ranks_once_a_check_passes_and_stops_after_its_last_network(monkeypatch):
    """The notebook's rule: a check every 3 epochs; the first check of a network compares with 0 (a gain of more
    than 0.01), the next one passes at >= 0.9 with no gain; the new network takes the hidden layers' ranks; after
    the last meta-iteration's network (15; 3 here) it stops."""
    assert original.MAX_META_ITERATIONS == 15
    monkeypatch.setattr(original, "MAX_META_ITERATIONS", 3)
    result = train_original(separable(), depth=2, seed=0, width=32)
    assert result.stop == "meta-iterations" and result.meta_iterations == 3 and result.final["evolve"]
    first = [row for row in result.log if row["meta_iteration"] == 0]
    assert [row["epoch"] for row in first] == [1, 2, 3, 4, 5, 6]
    assert [row["ranks"] is not None for row in first] == [False, False, True, False, False, True]
    assert [row["evolve"] for row in first] == [False] * 5 + [True]
    assert first[2]["test_acc"] >= 0.9 and first[-1]["test_acc"] - first[2]["test_acc"] <= 0.01
    second = next(row for row in result.log if row["meta_iteration"] == 1)
    assert second["widths"] == first[-1]["ranks"][:-1] == [4, 32]  # a 32 x 4 matrix has rank 4 at most


@pytest.mark.parametrize("epochs", [3.5, 0.4])
def test_it_stops_at_its_budget_and_never_spends_more(epochs):
    data = separable()
    per_epoch = epoch_flops(data, [32, 32])
    result = train_original(data, depth=2, seed=0, width=32, budget_flops=epochs * per_epoch)
    assert result.stop == "budget"
    assert len(result.log) == max(1, int(epochs))  # whole epochs that fit, and always the first
    spent = result.final["cumulative_flops"]
    assert spent == max(1, int(epochs)) * per_epoch
    assert spent <= epochs * per_epoch or len(result.log) == 1


def test_the_same_seed_gives_the_same_log_and_another_seed_another():
    def log(seed):
        return [{k: v for k, v in row.items() if "seconds" not in k}
                for row in train_original(separable(), depth=2, seed=seed, width=32, budget_flops=9 * 4_492_800).log]

    assert log(0) == log(0)
    assert log(0) != log(1)


# --- a tiny suite on digits, and its baseline --------------------------------------------------------------------
STUDY = """\
[study]
name = "q3_tiny"
mode = "evolve"
sampler = "grid"

[base.data]
dataset = "digits"

[base.model]
width = 16

[base.train]
max_epochs = 2
patience = 2
lr_drops = 0

[base.rank]
measure = "numerical:0.2"

[base.evolve]
max_iterations = 6
scratch = true

[space]
depth = { choices = [1] }
"evolve.rebuild" = { choices = ["warm", "reinit"] }
"""
SUITE = """\
[suite]
name = "tiny"

[questions]
3 = "Does shrinking keep accuracy, and at what cost?"

[[experiment]]
file = "q3.toml"
question = 3
seeds = [0, 1]
hypotheses = [{ kind = "paired", value = "test_acc", condition = "evolve.rebuild", a = "warm", b = "reinit" }]

[[baseline]]
name = "loop"
question = 3
study = "q3_tiny"
budget = "warm"
width = 32
cost = "2 runs, seconds"
"""


def write_suite(folder: Path, suite: str = SUITE, study: str = STUDY) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "q3.toml").write_text(study)
    (folder / "suite.toml").write_text(suite)
    return folder / "suite.toml"


def quiet(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    return code, err.getvalue()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The suite's baseline before its study ran (it waits), the study, a report, the baseline, a report, again."""
    tmp = tmp_path_factory.mktemp("cost")
    suite = str(write_suite(tmp / "suite"))
    root = tmp / "runs"
    steps = {"waiting": quiet(["findings", "run", suite, "--root", str(root), "--only", "loop"]),
             "study": quiet(["findings", "run", suite, "--root", str(root), "--only", "q3_tiny"]),
             "partial report": quiet(["findings", "report", suite, "--root", str(root), "--out", str(tmp / "partial")])}
    steps["baseline"] = quiet(["findings", "run", suite, "--root", str(root)])
    steps["files"] = {p.name: p.read_bytes() for p in (root / "baselines" / "loop").iterdir()}
    steps["again"] = quiet(["findings", "run", suite, "--root", str(root)])
    steps["report"] = quiet(["findings", "report", suite, "--root", str(root)])
    return {"suite": suite, "root": root, "steps": steps, "partial": tmp / "partial" / "findings.md",
            "full": root / "report" / "findings.md"}


def _warm_flops(root: Path) -> dict[int, float]:
    study = optuna.load_study(study_name="q3_tiny", storage=f"sqlite:///{root}/studies.sqlite3")
    return {t.params["seed"]: t.user_attrs["cumulative_flops"] for t in study.trials
            if t.params["evolve.rebuild"] == "warm" and t.state == optuna.trial.TrialState.COMPLETE}


def test_a_baseline_waits_for_the_runs_its_budget_comes_from(tiny):
    code, err = tiny["steps"]["waiting"]
    assert code == 1 and "Traceback" not in err
    assert "baseline 1 of 1: loop: 0 of 2 runs complete; 2 wait for their budget, the q3_tiny run with evolve.rebuild " \
           "= warm (e.g. depth 1, seed 0): run the study first" in err


def test_findings_run_runs_the_baseline_at_its_warm_runs_budget_and_skips_it_when_done(tiny):
    code, err = tiny["steps"]["baseline"]
    assert code == 0 and "Traceback" not in err, err
    assert "study 1 of 1: q3_tiny: complete (4 of 4 trials); skipped" in err
    assert "baseline 1 of 1: loop: complete (2 of 2 runs)" in err
    assert re.search(r"depth 1, seed 0: \[32\] -> widths \[\d+\] after \d+ networks \((budget|meta-iterations)\)", err)
    assert sorted(tiny["steps"]["files"]) == ["depth-1-seed-0.json", "depth-1-seed-1.json"]  # no temp file beside
    warm = _warm_flops(tiny["root"])
    for seed in (0, 1):
        r = json.loads(tiny["steps"]["files"][f"depth-1-seed-{seed}.json"])
        assert r["budget_flops"] == warm[seed] and r["budget_source"].endswith("(evolve.rebuild = warm)")
        assert r["cumulative_flops"] <= r["budget_flops"] and r["initial_widths"] == [32]
        assert r["log"][-1]["cumulative_flops"] == r["cumulative_flops"] and r["decides_on"] == "test accuracy"
        assert r["data"]["dataset"] == "digits" and r["environment"]["seed"] == seed
    code, err = tiny["steps"]["again"]
    assert code == 0 and "baseline 1 of 1: loop: complete (2 of 2 runs); skipped" in err
    after = {p.name: p.read_bytes() for p in (tiny["root"] / "baselines" / "loop").iterdir()}
    assert after == tiny["steps"]["files"]  # nothing run or written again


def test_an_interrupted_baseline_leaves_no_partial_file_and_continues(tmp_path, monkeypatch):
    """Ctrl-C (SIGTERM unwinds the same way) during the second run's write: the first run's file stays, the second
    leaves neither its file nor a temporary one; the continue command runs the second alone."""
    import shlex

    suite = write_suite(tmp_path / "suite", SUITE.replace('budget = "warm"', "budget = 3.0e7"))
    root = tmp_path / "runs"
    folder = root / "baselines" / "loop"
    write_text = Path.write_text

    def interrupted(self, text, *args, **kwargs):
        if self.parent == folder and "depth-1-seed-1" in self.name:
            write_text(self, text[: len(text) // 2])  # half of it on disk, then Ctrl-C
            raise KeyboardInterrupt
        return write_text(self, text, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", interrupted)
    code, err = quiet(["findings", "run", str(suite), "--root", str(root), "--only", "loop"])
    assert code == 130, err
    assert sorted(p.name for p in folder.iterdir()) == ["depth-1-seed-0.json"]
    [line] = [line for line in err.splitlines() if "Continue with: " in line]
    argv = shlex.split(line.split("Continue with: ", 1)[1])
    assert argv == ["rankprune", "findings", "run", str(suite), "--root", str(root), "--only", "loop"]
    monkeypatch.undo()
    first = (folder / "depth-1-seed-0.json").read_bytes()
    code, err = quiet(argv[1:])
    assert code == 0 and "baseline 1 of 1: loop: complete (2 of 2 runs)" in err, err
    assert "depth 1, seed 0:" not in err and "depth 1, seed 1:" in err  # only the missing run trained
    assert (folder / "depth-1-seed-0.json").read_bytes() == first
    assert sorted(p.name for p in folder.iterdir()) == ["depth-1-seed-0.json", "depth-1-seed-1.json"]
    assert json.loads((folder / "depth-1-seed-1.json").read_text())["budget_source"] == "fixed"


BAD = [
    (lambda s: s.replace('width = 32', 'widht = 32'), "baseline 1: unknown key widht; known: name, question, study, budget"),
    (lambda s: s.replace('budget = "warm"\n', ''), "baseline 1: budget is required"),
    (lambda s: s.replace('study = "q3_tiny"', 'study = "q3"'), "study = 'q3' is no experiment of the suite; it has q3_tiny"),
    (lambda s: s.replace('budget = "warm"', 'budget = "cold"'), "budget = 'cold' is not a value of evolve.rebuild in study"),
    (lambda s: s.replace('budget = "warm"', 'budget = -1'), "budget must be a value of evolve.rebuild"),
    (lambda s: s.replace('budget = "warm"', 'budget = 1e9\nfallback_flops = 1e9'), "fallback_flops goes with a budget"),
    (lambda s: s.replace('budget = "warm"', 'budget = "warm"\nfallback_flops = "lots"'), "fallback_flops must be a positive"),
    (lambda s: s.replace('width = 32', 'width = 0'), "width must be a whole number of hidden units"),
    (lambda s: s.replace('name = "loop"', 'name = "q3_tiny"'), "baseline name 'q3_tiny' is used twice (or by a study)"),
    (lambda s: s.replace('name = "loop"', 'name = "a loop"'), "name must be letters, digits"),
    (lambda s: s.replace("question = 3\nstudy", "question = 4\nstudy"), "question must be a number of [questions] (3)"),
    (lambda s: s.replace("[[baseline]]", "[baseline]"), "baseline must be an array of tables: [[baseline]]"),
]


@pytest.mark.parametrize("change, message", BAD, ids=[m[:30] for _, m in BAD])
def test_a_bad_baseline_is_one_line_and_exit_2(tmp_path, capsys, change, message):
    path = write_suite(tmp_path, change(SUITE))
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_suite(path)
    line = one_line_error(capsys, main(["findings", "run", str(path), "--root", str(tmp_path / "runs")]))
    assert line.startswith("rankprune findings: error: ") and message in line
    assert not (tmp_path / "runs").exists()


def test_a_baseline_follows_only_an_mlp_study(tmp_path):
    study = STUDY.replace("[base.model]\nwidth = 16", '[base.model]\nfamily = "cnn"\nwidth = 4')
    with pytest.raises(ConfigError, match="the original loop trains an MLP; study 'q3_tiny' trains the cnn family"):
        parse_suite(write_suite(tmp_path, study=study))


def test_only_names_a_baseline_and_a_study_does_not_name_its_baselines(tmp_path):
    suite = parse_suite(write_suite(tmp_path))
    assert suite.select(["loop"]) == [] and [b.name for b in suite.select_baselines(["loop"])] == ["loop"]
    assert suite.select_baselines(["q3_tiny"]) == [] and [b.name for b in suite.select_baselines(None)] == ["loop"]
    [b] = suite.baselines
    assert (b.depths, b.seeds, b.budget, b.width) == ((1,), (0, 1), "warm", 32)


# --- the report ---------------------------------------------------------------------------------------------------
def test_the_report_lists_a_baseline_not_run_yet_with_the_command_that_runs_it(tiny):
    code, err = tiny["steps"]["partial report"]
    assert code == 0, err
    text = tiny["partial"].read_text()
    command = f"rankprune findings run {tiny['suite']} --root {tiny['root']} --only loop"
    assert f"baseline `loop`: 2 of 2 runs not run yet; run it with `{command}`" in text
    assert "| original loop" not in text  # no row for what has not run
    assert "| warm " in text and "| scratch, warm's widths " in text


def _table_rows(text: str) -> dict[str, list[str]]:
    section = text[text.index("### Cost: "):]
    rows = [line.split("|")[1:-1] for line in section.splitlines() if line.startswith("| ")]
    return {r[0].strip(): [c.strip() for c in r] for r in rows if r[0].strip() != "method"}


def test_the_report_draws_the_cost_section_from_the_runs(tiny):
    code, err = tiny["steps"]["report"]
    assert code == 0, err
    report = tiny["full"]
    text = report.read_text()
    assert text.index("## Question 3: ") < text.index("### Cost: accuracy against training compute and time "
                                                        "(`q3_tiny` and baseline `loop`)")
    assert "The original loop decides on test accuracy, as the notebook did; rankprune decides on validation" in text
    assert "two single-thread processes sharing the machine: read them as ratios" in text
    assert "not run yet" not in text[text.index("### Cost: "):]
    rows = _table_rows(text)
    assert list(rows) == ["warm", "reinit", "scratch, warm's widths", "scratch, reinit's widths", ORIGINAL]
    assert all(r[-1] == "2" for r in rows.values())  # n: both seeds of each method
    # the warm row's mean is the mean of the warm trials' chosen test accuracy, in %
    study = optuna.load_study(study_name="q3_tiny", storage=f"sqlite:///{tiny['root']}/studies.sqlite3")
    warm = [t.user_attrs["test_acc"] for t in study.trials if t.params["evolve.rebuild"] == "warm"]
    assert rows["warm"][1].startswith(f"{100 * np.mean(warm):.2f} [")
    assert rows["warm"][3] == "1.00"  # FLOPs as a multiple of warm's, the budget's method
    loop = [json.loads(p.read_text()) for p in sorted((tiny["root"] / "baselines" / "loop").glob("*.json"))]
    assert rows[ORIGINAL][1].startswith(f"{100 * np.mean([r['test_acc'] for r in loop]):.2f} [")
    linked = [name for name in LINK.findall(text) if name.startswith("loop-")]
    assert linked == ["loop-depth-1.png"]
    path = report.parent / linked[0]
    assert path.read_bytes()[:8] == PNG_MAGIC
    with Image.open(path) as im:
        im.verify()


def test_the_cost_table_takes_each_methods_result_and_spending_over_seeds():
    def curve(method, seed, acc, flops, seconds):
        return Curve(method, 2, seed, np.array([flops / 2, flops]), np.array([seconds / 2, seconds]),
                     np.array([acc - 0.01, acc]), (flops, seconds, acc), (2 * flops, 2 * seconds), (10, 5))

    curves = [curve("warm", 0, 0.96, 1e12, 10.0), curve("warm", 1, 0.98, 3e12, 30.0),
              curve(ORIGINAL, 0, 0.90, 2e12, 60.0), curve(ORIGINAL, 1, 0.92, 2e12, 20.0),
              Curve("warm", 3, 0, np.array([1.0]), np.array([1.0]), np.array([0.1]), (1.0, 1.0, 0.1), (1.0, 1.0),
                    (1,))]  # another depth: left out
    table = cost_table(curves, ["warm", ORIGINAL], 2, "warm")
    warm, loop = (table.iloc[i].to_dict() for i in range(2))
    assert warm["result test accuracy (%)"].startswith("97.00 [") and loop["result test accuracy (%)"].startswith("91.00 [")
    assert warm["training TFLOP"] == "4.00" and loop["training TFLOP"] == "4.00"  # means of everything each trained
    assert loop["FLOPs ÷ warm's"] == "1.00" and loop["seconds ÷ warm's"] == "2.00"
    assert warm["n"] == "2" and warm["result widths (median per layer)"] == "[10, 5]"
