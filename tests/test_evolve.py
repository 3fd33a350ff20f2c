"""The controller, run for real on digits: invariants of its run folder, reproducibility, resume."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from rankprune.evolve import DEPTH_STOP_REASONS, NullReporter, derive_seed, evolve_depth
from rankprune.models import forward_flops, parameter_count
from rankprune.rank import DEFAULT_RECORDED, singular_values
from rankprune.runfolder import DEPTHS, EPOCHS, ITERATIONS, SPECTRA, STATUS, RunFolder

# Columns runfolder.py and evolve.py document for each table.
EPOCH_COLUMNS = {
    "depth", "iteration", "epoch", "train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc",
    "seconds", "flops", "best_val_acc", "lr", "widths", "weight_decay", "cumulative_seconds", "cumulative_flops",
    "spectral_norm", "frobenius_norm", "grad_rank", *(f"rank_{spec}" for spec in DEFAULT_RECORDED),
}
ITERATION_COLUMNS = {
    "depth", "iteration", "widths", "parameters", "weight_decay", "epochs", "train_stop", "train_loss", "train_acc",
    "val_loss", "val_acc", "test_loss", "test_acc", "generalisation_gap", "seconds", "flops", "cumulative_seconds",
    "cumulative_flops", "rank_measure", "ranks", "next_widths", "stop", *(f"rank_{spec}" for spec in DEFAULT_RECORDED),
}
SPECTRA_COLUMNS = {"depth", "iteration", "layer", "singular_values"}
# Wall-clock fields: the only ones allowed to differ between two runs of one config.
CLOCK = {"seconds", "cumulative_seconds", "reference_seconds"}

# Settings found by experiment on digits: width 64 shrinks to a fixed point of about 40 units in
# 6-10 iterations for seeds 0-3 (numerical rank at rtol 0.05, weight decay 5e-3).
TO_FIXED_POINT = dict(
    model={"width": 64},
    train={"max_epochs": 5, "patience": 4, "lr_drops": 1, "weight_decay": 5e-3},
    rank={"measure": "numerical:0.05"},
    # reinit, the rebuild these settings were found with (warm, the default, ends each depth with an anneal)
    evolve={"layers": (1,), "max_iterations": 14, "max_drop": 1.0, "width_tol": 0.0, "rebuild": "reinit"},
)
RUNS = {
    "two-depths": {},
    # drop_z 0: the --max-drop rule alone, which these integration tests check (the standard-error rule is
    # tested on hand-made histories in test_phases.py)
    "accuracy-drop": dict(evolve={"layers": (2,), "max_iterations": 6, "max_drop": 0.0, "drop_z": 0.0}),
    "to-fixed-point": TO_FIXED_POINT,
}


def without(row: dict, keys=CLOCK) -> dict:
    return {k: v for k, v in row.items() if k not in keys}


def results(run: RunFolder) -> dict:
    """Everything a run recorded except wall-clock time: every table's rows and depths.json."""
    tables = {table: [without(r) for r in run.rows(table)] for table in (EPOCHS, ITERATIONS, SPECTRA)}
    return {**tables, DEPTHS: {k: without(v) for k, v in run.read(DEPTHS).items()}}


def by_depth(rows: list[dict]) -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = {}
    for r in rows:
        out.setdefault(r["depth"], []).append(r)
    return out


@pytest.fixture(scope="module", params=sorted(RUNS))
def finished(request, tiny_config, run_controller, tmp_path_factory):
    """(config, run folder) of a finished controller run, one per entry of RUNS."""
    cfg = tiny_config(**RUNS[request.param])
    run = run_controller(cfg, tmp_path_factory.mktemp(request.param) / "run")
    return cfg, run


# --- invariants of a finished run -----------------------------------------------------------------
def test_widths_never_grow(finished):
    cfg, run = finished
    for depth, rows in by_depth(run.rows(ITERATIONS)).items():
        assert [r["iteration"] for r in rows] == list(range(len(rows)))
        assert rows[0]["widths"] == [cfg.model.width] * depth
        for row in rows:
            assert len(row["widths"]) == len(row["next_widths"]) == depth
            assert all(cfg.rank.min_width <= new <= old for new, old in zip(row["next_widths"], row["widths"]))
        for before, after in zip(rows, rows[1:]):
            assert after["widths"] == before["next_widths"]


def test_every_depth_ends_with_a_stop_reason(finished):
    cfg, run = finished
    depths = run.read(DEPTHS)
    assert sorted(depths) == sorted(str(d) for d in cfg.evolve.layers)
    rows = by_depth(run.rows(ITERATIONS))
    for depth in cfg.evolve.layers:
        summary, history = depths[str(depth)], rows[depth]
        assert summary["stop_reason"] in DEPTH_STOP_REASONS
        assert history[-1]["stop"] == summary["stop_reason"]
        assert all(r["stop"] is None for r in history[:-1])
        assert summary["iterations"] == len(history) <= cfg.evolve.max_iterations
    assert run.read(STATUS)["state"] == "finished"


def test_stop_reasons_mean_what_they_say(finished):
    cfg, run = finished
    for history in by_depth(run.rows(ITERATIONS)).values():
        last = history[-1]
        best = max(r["val_acc"] for r in history)
        if last["stop"] == "fixed-point":
            assert last["next_widths"] == last["widths"]
        elif last["stop"] == "max-iterations":
            assert len(history) == cfg.evolve.max_iterations
        elif last["stop"] == "accuracy-drop":
            assert last["val_acc"] < best - cfg.evolve.max_drop
        elif last["stop"] == "converged":
            assert sum(last["widths"]) - sum(last["next_widths"]) <= cfg.evolve.width_tol * sum(last["widths"])
        # No earlier iteration met a stop condition, or the depth would have ended there.
        for i, row in enumerate(history[:-1]):
            assert row["next_widths"] != row["widths"]
            assert row["val_acc"] >= max(r["val_acc"] for r in history[: i + 1]) - cfg.evolve.max_drop
            assert row["train_stop"] != "diverged"


def test_the_chosen_iteration_is_the_last_within_max_drop_of_the_best(finished):
    cfg, run = finished
    rows = by_depth(run.rows(ITERATIONS))
    for key, summary in run.read(DEPTHS).items():
        history = rows[int(key)]
        best = max(r["val_acc"] for r in history)
        chosen = [r for r in history if r["val_acc"] >= best - cfg.evolve.max_drop][-1]
        assert summary["chosen_iteration"] == chosen["iteration"]
        assert (summary["widths"], summary["parameters"]) == (chosen["widths"], chosen["parameters"])
        assert (summary["val_acc"], summary["test_acc"]) == (chosen["val_acc"], chosen["test_acc"])
        assert summary["initial_widths"] == history[0]["widths"]
        final = run.load_weights(int(key))
        saved = run.load_weights(int(key), chosen["iteration"])
        assert final.keys() == saved.keys() and all(torch.equal(final[k], saved[k]) for k in final)


def test_every_iteration_has_weights_and_spectra(finished, digits):
    _cfg, run = finished
    spectra = {(r["depth"], r["iteration"], r["layer"]): r["singular_values"] for r in run.rows(SPECTRA)}
    iterations = run.rows(ITERATIONS)
    assert len(spectra) == len(run.rows(SPECTRA))  # one row per (depth, iteration, layer)
    assert len(spectra) == sum(r["depth"] + 1 for r in iterations)
    for row in iterations:
        depth, iteration = row["depth"], row["iteration"]
        assert run.weights_path(depth, iteration).is_file()
        state = run.load_weights(depth, iteration)
        dims = [digits.n_features, *row["widths"], digits.n_classes]
        shapes = [tuple(state[f"linears.{i}.weight"].shape) for i in range(depth + 1)]
        assert shapes == [(b, a) for a, b in zip(dims[:-1], dims[1:])]
        assert sum(v.numel() for v in state.values()) == row["parameters"]
        assert row["parameters"] == parameter_count(digits.n_features, row["widths"], digits.n_classes)
        for layer in range(depth + 1):
            # The recorded spectrum is the spectrum of the saved weights at saturation, to the float32 precision
            # the weights are stored (and decomposed) in.
            recorded, exact = spectra[(depth, iteration, layer)], singular_values(state[f"linears.{layer}.weight"])
            np.testing.assert_allclose(recorded, exact, rtol=0, atol=50 * np.finfo(np.float32).eps * exact[0])


def test_tables_load_with_pandas_and_have_the_documented_columns(finished):
    cfg, run = finished
    epochs = pd.read_json(run.path / EPOCHS, lines=True)
    iterations = pd.read_json(run.path / ITERATIONS, lines=True)
    spectra = pd.read_json(run.path / SPECTRA, lines=True)
    drive = f"rank_{cfg.rank.measure}"
    assert EPOCH_COLUMNS | {drive} <= set(epochs.columns)
    assert ITERATION_COLUMNS | {drive} <= set(iterations.columns)
    assert SPECTRA_COLUMNS <= set(spectra.columns)
    assert len(epochs) == iterations["epochs"].sum()
    for table in (epochs, iterations):
        for spec in (*DEFAULT_RECORDED, cfg.rank.measure):
            # One entry per weight matrix: the hidden layers and the output layer.
            assert (table[f"rank_{spec}"].map(len) == table["depth"] + 1).all()
    for column in ("spectral_norm", "frobenius_norm", "grad_rank"):
        assert (epochs[column].map(len) == epochs["depth"] + 1).all()
    assert (iterations["ranks"].map(len) == iterations["depth"]).all()
    assert (iterations["ranks"] == iterations[drive].map(lambda r: r[:-1])).all()
    assert (iterations["rank_measure"] == cfg.rank.measure).all()


def test_epoch_rows_add_up_to_their_iteration(finished, digits):
    _cfg, run = finished
    epochs = by_depth(run.rows(EPOCHS))
    for depth, history in by_depth(run.rows(ITERATIONS)).items():
        cumulative = 0.0
        for row in history:
            mine = [e for e in epochs[depth] if e["iteration"] == row["iteration"]]
            assert [e["epoch"] for e in mine] == list(range(1, row["epochs"] + 1))
            assert all(e["widths"] == row["widths"] for e in mine)
            per_epoch = 3 * forward_flops(digits.n_features, row["widths"], digits.n_classes) * len(digits.train)
            assert all(e["flops"] == per_epoch for e in mine)
            assert row["flops"] == per_epoch * row["epochs"]
            cumulative += row["flops"]
            assert row["cumulative_flops"] == pytest.approx(cumulative)
            assert mine[-1]["cumulative_flops"] == pytest.approx(cumulative)
            assert (mine[-1]["val_acc"], mine[-1]["test_acc"]) == (row["val_acc"], row["test_acc"])
            assert all(e["seconds"] >= 0 for e in mine)


# --- the controller shrinks a small network to a fixed point ---------------------------------------
def test_shrinks_to_a_fixed_point_on_digits(tiny_config, run_controller, tmp_path):
    cfg = tiny_config(**TO_FIXED_POINT)
    run = run_controller(cfg, tmp_path / "run")
    summary = run.read(DEPTHS)["1"]
    history = run.rows(ITERATIONS)
    assert summary["stop_reason"] == "fixed-point"
    assert len(history) > 1
    assert sum(history[-1]["widths"]) < sum(history[0]["widths"]) == 64
    assert history[-1]["next_widths"] == history[-1]["widths"]
    assert summary["parameters"] < summary["initial_parameters"]
    # Still a working classifier at its fixed point (10 classes: chance is 0.1).
    assert history[-1]["test_acc"] > 0.8


def test_evolve_depth_starts_from_given_widths(tiny_config, digits, tmp_path):
    cfg = tiny_config(evolve={"layers": (2,), "max_iterations": 1})
    run = RunFolder(tmp_path / "run")
    run.create(overwrite=False)
    result = evolve_depth(cfg, digits, run, 2, NullReporter(), initial_widths=[20, 12])
    assert run.rows(ITERATIONS)[0]["widths"] == [20, 12]
    assert result.summary["initial_widths"] == [20, 12]
    with pytest.raises(ValueError):
        evolve_depth(cfg, digits, RunFolder(tmp_path / "other"), 3, NullReporter(), initial_widths=[20, 12])
    assert not (tmp_path / "other").exists()


@pytest.mark.slow
def test_shrinks_on_mnist10k_and_keeps_accuracy(mnist10k, tiny_config, run_controller, tmp_path):
    cfg = tiny_config(
        data={"dataset": "mnist", "data_dir": str(mnist10k), "download": False},
        model={"width": 128},
        train={"max_epochs": 8, "patience": 3, "lr_drops": 1, "weight_decay": 5e-3},
        rank={"measure": "numerical:0.05"},
        evolve={"layers": (2,), "max_iterations": 4, "max_drop": 0.02, "width_tol": 0.0},
    )
    run = run_controller(cfg, tmp_path / "run")
    summary = run.read(DEPTHS)["2"]
    assert summary["stop_reason"] in DEPTH_STOP_REASONS
    assert sum(summary["widths"]) < sum(summary["initial_widths"])
    assert summary["test_acc"] > 0.9
    assert summary["test_acc"] >= summary["initial_test_acc"] - 0.05


# --- reproducibility -------------------------------------------------------------------------------
def test_same_seed_same_run_other_seed_other_weights(tiny_config, run_controller, tmp_path):
    a = run_controller(tiny_config(seed=5), tmp_path / "a")
    b = run_controller(tiny_config(seed=5), tmp_path / "b")
    c = run_controller(tiny_config(seed=6), tmp_path / "c")
    assert results(a) == results(b)  # widths, ranks, losses and accuracies, exactly
    for row in a.rows(ITERATIONS):
        wa, wb = a.load_weights(row["depth"], row["iteration"]), b.load_weights(row["depth"], row["iteration"])
        assert all(torch.equal(wa[k], wb[k]) for k in wa)
    for depth in (1, 2):
        wa, wc = a.load_weights(depth, 0), c.load_weights(depth, 0)
        assert not any(torch.equal(wa[k], wc[k]) for k in wa if k.endswith("weight"))
    assert [r["val_acc"] for r in c.rows(EPOCHS)] != [r["val_acc"] for r in a.rows(EPOCHS)]


def test_derive_seed_is_stable_and_separates_keys():
    assert derive_seed(0, 2, 1, 0) == derive_seed(0, 2, 1, 0)
    seeds = {derive_seed(s, d, i, k) for s in range(3) for d in range(1, 4) for i in range(4) for k in range(3)}
    assert len(seeds) == 3 * 3 * 4 * 3
    assert all(0 <= s < 2**31 for s in seeds)


# --- resume ---------------------------------------------------------------------------------------
class InterruptAt:
    """A reporter that raises KeyboardInterrupt (as Ctrl-C would) at one call of one of its hooks."""

    def __init__(self, hook: str, depth: int, iteration: int | None = None, epoch: int | None = None):
        self.hook, self.depth, self.iteration, self.epoch = hook, depth, iteration, epoch

    def _maybe(self, hook, depth, iteration=None, epoch=None):
        if (hook, depth) == (self.hook, self.depth) and self.iteration in (None, iteration) and self.epoch in (None, epoch):
            raise KeyboardInterrupt

    def depth_started(self, depth, widths, iteration):
        self._maybe("depth_started", depth, iteration)

    def iteration_started(self, depth, iteration, widths):
        self._maybe("iteration_started", depth, iteration)

    def epoch_done(self, depth, iteration, row):
        self._maybe("epoch_done", depth, iteration, row["epoch"])

    def iteration_done(self, depth, row):
        self._maybe("iteration_done", depth, row["iteration"])

    def depth_done(self, depth, summary):
        self._maybe("depth_done", depth)


@pytest.fixture(scope="module")
def reference(tiny_config, run_controller, tmp_path_factory):
    """The uninterrupted run that every resumed run must reproduce."""
    run = run_controller(tiny_config(), tmp_path_factory.mktemp("reference") / "run")
    assert len(run.rows(ITERATIONS)) >= 4  # enough iterations that the interruptions below land inside
    return run


INTERRUPTIONS = [
    InterruptAt("epoch_done", depth=1, iteration=1, epoch=2),
    InterruptAt("epoch_done", depth=2, iteration=0, epoch=1),
    InterruptAt("iteration_started", depth=1, iteration=1),
    InterruptAt("iteration_done", depth=2, iteration=0),
    InterruptAt("depth_done", depth=1),
    InterruptAt("depth_started", depth=2),
]


@pytest.mark.parametrize("interrupt", INTERRUPTIONS, ids=lambda i: f"{i.hook}-d{i.depth}-i{i.iteration}-e{i.epoch}")
def test_resume_after_an_interruption_reproduces_the_uninterrupted_run(
    interrupt, reference, tiny_config, run_controller, tmp_path
):
    cfg = tiny_config()
    with pytest.raises(KeyboardInterrupt):
        run_controller(cfg, tmp_path / "run", reporter=interrupt)
    run = RunFolder(tmp_path / "run")
    finished = {(r["depth"], r["iteration"]) for r in run.rows(ITERATIONS)}
    assert run.read(STATUS)["state"] == "running"
    assert len(finished) < len(reference.rows(ITERATIONS))

    # Leave what a kill mid-iteration leaves: an epoch row of an iteration that never finished, and
    # torn last lines (no newline) in the epoch and spectra tables.
    unfinished = max(finished, default=(1, -1))
    stray = {**reference.rows(EPOCHS)[0], "depth": unfinished[0], "iteration": unfinished[1] + 1, "epoch": 99}
    with (run.path / EPOCHS).open("a") as fh:
        fh.write(json.dumps(stray) + "\n" + '{"depth": 1, "iteration": 0, "ep')
    with (run.path / SPECTRA).open("a") as fh:
        fh.write('{"depth": 2, "iteration": 0, "layer": 0, "singular_values": [1.0, 0.')

    run_controller(cfg, tmp_path / "run")  # resume

    assert run.read(STATUS)["state"] == "finished"
    assert all(r["epoch"] != 99 for r in run.rows(EPOCHS))
    assert results(run) == results(reference)
    for table in (EPOCHS, ITERATIONS, SPECTRA):
        assert len(pd.read_json(run.path / table, lines=True)) == len(reference.rows(table))
    for row in reference.rows(ITERATIONS):
        mine, theirs = run.load_weights(row["depth"], row["iteration"]), reference.load_weights(row["depth"], row["iteration"])
        assert all(torch.equal(mine[k], theirs[k]) for k in theirs)


def test_resume_after_a_torn_iterations_row_keeps_every_iteration(reference, tiny_config, run_controller, tmp_path):
    cfg = tiny_config()
    with pytest.raises(KeyboardInterrupt):
        run_controller(cfg, tmp_path / "run", reporter=InterruptAt("iteration_started", depth=1, iteration=1))
    run = RunFolder(tmp_path / "run")
    # Killed while writing iteration 1's row: the fragment has no newline and is not a complete row.
    with (run.path / ITERATIONS).open("a") as fh:
        fh.write('{"depth": 1, "iteration": 1, "wid')
    run_controller(cfg, tmp_path / "run")
    assert [without(r) for r in run.rows(ITERATIONS)] == [without(r) for r in reference.rows(ITERATIONS)]
    assert len(pd.read_json(run.path / ITERATIONS, lines=True)) == len(reference.rows(ITERATIONS))


def test_running_a_finished_folder_again_changes_nothing(reference, tiny_config, run_controller, tmp_path):
    shutil.copytree(reference.path, tmp_path / "run")
    run = RunFolder(tmp_path / "run")
    before = {name: (run.path / name).read_bytes() for name in (EPOCHS, ITERATIONS, SPECTRA, DEPTHS)}
    weights = {p.name: p.read_bytes() for p in (run.path / "weights").iterdir()}
    run_controller(tiny_config(), run.path)
    assert {name: (run.path / name).read_bytes() for name in before} == before
    assert {p.name: p.read_bytes() for p in (run.path / "weights").iterdir()} == weights
    assert run.read(STATUS)["state"] == "finished"


# --- warm rebuild ----------------------------------------------------------------------------------
WARM = dict(train={"lr_drops": 1, "max_epochs": 4}, evolve={"layers": (2,), "rebuild": "warm", "max_iterations": 3})


@pytest.fixture(scope="module")
def warm_run(tiny_config, run_controller, tmp_path_factory):
    cfg = tiny_config(**WARM)
    return cfg, run_controller(cfg, tmp_path_factory.mktemp("warm") / "run")


def test_warm_run_records_accuracy_around_each_rebuild_and_ends_with_one_anneal(warm_run):
    cfg, run = warm_run
    rows = run.rows(ITERATIONS)
    shrink, anneal = [r for r in rows if r["phase"] == "shrink"], [r for r in rows if r["phase"] == "anneal"]
    assert len(anneal) == 1 and rows[-1] is not None and rows[-1]["phase"] == "anneal"
    assert len(shrink) >= 2
    for before, row in zip(shrink, shrink[1:]):
        assert row["rebuild"] == "warm"
        assert row["test_acc_before_rebuild"] == before["test_acc"]
        assert row["test_acc_after_rebuild"] is not None
    # shrink iterations stop at the first plateau (no learning-rate drop); the anneal runs at lr x 0.1
    shrink_epochs = [r for r in run.rows(EPOCHS) if r["iteration"] < anneal[0]["iteration"]]
    assert {r["lr"] for r in shrink_epochs} == {cfg.train.lr}
    anneal_epochs = [r for r in run.rows(EPOCHS) if r["iteration"] == anneal[0]["iteration"]]
    assert anneal_epochs[0]["lr"] == pytest.approx(cfg.train.lr * cfg.train.lr_drop_factor)
    summary = run.read(DEPTHS)["2"]
    assert summary["chosen_iteration"] == anneal[0]["iteration"] and summary["widths"] == anneal[0]["widths"]
    final, annealed = run.load_weights(2), run.load_weights(2, anneal[0]["iteration"])
    assert all(torch.equal(final[k], annealed[k]) for k in annealed)


def test_warm_rebuild_keeps_accuracy_until_retraining(warm_run):
    _cfg, run = warm_run
    for row in run.rows(ITERATIONS):
        if row["phase"] == "shrink" and row["iteration"] > 0:
            # digits' 360-image test split: a warm rebuild may move accuracy by a few images, not collapse it
            assert row["test_acc_after_rebuild"] >= row["test_acc_before_rebuild"] - 0.05


@pytest.mark.parametrize("interrupt", [InterruptAt("epoch_done", depth=2, iteration=1, epoch=1),
                                       InterruptAt("iteration_started", depth=2, iteration=3)],
                         ids=["mid-shrink", "before-anneal"])
def test_warm_resume_reproduces_the_uninterrupted_run(interrupt, warm_run, run_controller, tmp_path):
    cfg, reference = warm_run
    assert len(reference.rows(ITERATIONS)) == 4  # three shrink iterations and the anneal: iteration 3
    with pytest.raises(KeyboardInterrupt):
        run_controller(cfg, tmp_path / "run", reporter=interrupt)
    run = run_controller(cfg, tmp_path / "run")
    assert results(run) == results(reference)


def test_gradient_rank_is_measured_on_a_full_batch(tmp_path, tiny_config, run_controller, digits):
    """The epoch's last batch is short (digits: 1,294 rows, batch 64, last batch 14); a gradient of B rows has
    rank at most B, so measured on that batch the rank could never pass 14."""
    cfg = tiny_config(model={"width": 48}, evolve={"layers": (1,), "max_iterations": 1},
                      train={"max_epochs": 2, "patience": 2, "weight_decay": 0.0})
    last_batch = len(digits.train) % cfg.train.batch_size
    assert 0 < last_batch < 20
    run = run_controller(cfg, tmp_path / "run")
    first_layer = [r["grad_rank"][0] for r in run.rows(EPOCHS)]
    assert all(g <= min(48, cfg.train.batch_size) for g in first_layer)
    assert max(first_layer) > last_batch
