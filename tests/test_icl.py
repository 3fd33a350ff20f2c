"""In-context learning end to end: --model transformer through the controller on sequences of one task (data.py's
sequence splits, drawn afresh each epoch), accuracy by position, the config's refusals, and `rankprune study icl`
over an MLP study and a transformer study. On the bundled digits, tiny and fast; the experiment itself is
studies/icl/*.toml."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from rankprune import api
from rankprune.cli import main
from rankprune.config import ConfigError, RunConfig
from rankprune.job import load_data
from rankprune.models import get_family
from rankprune.report.icl import cells, trial_rows, verdicts
from rankprune.tasks import TaskStream, every_sequence

SEQ = {"dataset": "digits", "tasks": 16, "sequence_length": 8}


def _data(**data):
    cfg = RunConfig().replace(data={**SEQ, **data}, model={"family": "transformer"}).validate().resolved()
    return load_data(cfg)


def test_sequence_splits_hold_one_task_per_sequence_tokens_and_fresh_draws_each_epoch():
    d = _data()
    assert d.input_shape == (8, 64 + 10) and d.train.y.shape[1] == 8 and d.sequence_length == 8
    x = d.train.x
    torch.testing.assert_close(x[:, 1:, 64:], torch.nn.functional.one_hot(d.train.y[:, :-1], 10).float())
    assert float(x[:, 0, 64:].abs().sum()) == 0.0  # position 0 has no previous label
    # min(n_train x N, task_samples) examples as sequences of 8
    n_train = len(load_data(RunConfig().replace(data={"dataset": "digits"}).validate()).train)
    assert len(d.train) == min(n_train * 16, 200_000) // 8
    one, again, two = d.train_for(1), d.train_for(1), d.train_for(2)
    assert torch.equal(one.x, again.x) and not torch.equal(one.x, two.x)  # reproducible, and fresh every epoch
    assert torch.equal(_data().train_for(3).x, d.train_for(3).x)  # from the seed alone


def test_every_held_out_image_appears_once_per_evaluation_task():
    x, y = torch.randn(40, 1, 4, 4), torch.randint(0, 3, (40,))
    stream = TaskStream(seed=1, d=16, n_classes=3)
    sx, sy = every_sequence(x, y, 3, stream, length=8, cap=10_000, seed=0)
    assert sx.shape == (15, 8, 16)  # 40 // 8 = 5 sequences per task, 3 tasks
    for task in range(3):
        projected = x.flatten(1) @ stream.projection(task).T
        rows = torch.cdist(sx[5 * task: 5 * task + 5].reshape(-1, 16), projected).argmin(dim=1)
        assert len(set(rows.tolist())) == 40  # every image once, none twice
        assert torch.equal(sy[5 * task: 5 * task + 5].reshape(-1), stream.permutation(task)[y[rows]])
    capped = every_sequence(x, y, 3, stream, length=8, cap=50, seed=0)[0]
    assert len(capped) == 6  # 50 pairs over 3 tasks: 2 sequences of 8 each


def test_the_config_refuses_what_a_transformer_cannot_run_in_one_line():
    with pytest.raises(ConfigError, match="give --tasks N"):
        RunConfig().replace(model={"family": "transformer"}).validate()
    with pytest.raises(ConfigError, match="--sequence-length is for --model transformer"):
        RunConfig().replace(data={**SEQ}).validate()
    with pytest.raises(ConfigError, match="no fixed row to relabel"):
        RunConfig().replace(data={**SEQ, "label_noise": 0.2}, model={"family": "transformer"}).validate()
    with pytest.raises(ConfigError, match="longer than a split has images"):
        _data(sequence_length=500)
    with pytest.raises(ConfigError, match="only shrinks"):
        load_data(RunConfig().replace(data={"dataset": "digits", "image_size": 9}).validate())


def test_image_size_averages_blocks_of_pixels():
    big = load_data(RunConfig().replace(data={"dataset": "digits"}).validate())
    small = load_data(RunConfig().replace(data={"dataset": "digits", "image_size": 4}).validate())
    assert small.input_shape == (1, 4, 4) and len(small.train) == len(big.train)


def test_a_transformer_evolves_shrinks_and_records_accuracy_by_position(tmp_path):
    out = tmp_path / "run"
    code = main(["evolve", "--dataset", "digits", "--model", "transformer", "--tasks", "16", "--sequence-length", "8",
                 "--width", "6", "--layers", "1", "--max-epochs", "2", "--max-iterations", "2", "--optimizer", "adam",
                 "--lr", "3e-3", "--movement", "--out", str(out)])
    assert code == 0
    epoch = json.loads((out / "epochs.jsonl").read_text().splitlines()[0])
    # movement of every group's driving matrix (those the family makes on the fly included) and the read-out
    assert len(epoch["movement"]) == 5 and all(v > 0 for v in epoch["movement"])
    rows = [json.loads(line) for line in (out / "iterations.jsonl").read_text().splitlines()]
    family = get_family("transformer")
    first = rows[0]
    assert first["widths"] == family.start_widths(6, 1) == [6, 6, 6, 24]
    assert first["parameters"] == family.parameter_count((8, 74), first["widths"], 10)
    for key in ("val_acc_by_position", "test_acc_by_position", "test_acc_unseen_tasks_by_position"):
        curve = first[key]
        assert len(curve) == 8 and all(0 <= v <= 1 for v in curve)
    # the position curves average to the split's accuracy: every position holds the same number of labels
    assert math.isclose(np.mean(first["test_acc_by_position"]), first["test_acc"], abs_tol=1e-9)
    assert all(new <= old for new, old in zip(first["next_widths"], first["widths"]))
    assert first["next_widths"][0] >= 2  # a residual stream keeps width rank + 1 (LayerNorm takes one direction)
    net = api.load_network(out, depth=1)  # the chosen network, as it was saved
    assert net(torch.zeros(2, 8, 74)).shape == (2, 8, 10)


def _frame(rows: list[dict]) -> pd.DataFrame:
    """A trials_frame as two studies' trials give it."""
    out = []
    for r in rows:
        widths = [r["width"]] * 2 if r["family"] == "mlp" else get_family("transformer").start_widths(r["width"], 1)
        out.append({"family": r["family"], "param_data.tasks": r["tasks"], "param_seed": r["seed"],
                    "test_acc": 0.9, "test_acc_unseen_tasks": r["unseen"], "val_acc": 0.9, "widths": widths,
                    "initial_widths": widths, "censored": [None] * len(widths), "depth": 1})
    return pd.DataFrame(out)


def test_the_verdicts_see_a_rise_with_task_count_only_where_there_is_one():
    rng = np.random.default_rng(0)
    rows = []
    for seed in range(3):
        for i, tasks in enumerate((2, 8, 32, 128)):
            for width in (8, 32):
                rows.append({"family": "transformer", "tasks": tasks, "width": width, "seed": seed,
                             "unseen": 0.5 + 0.1 * i + rng.uniform(0, 0.01)})
                rows.append({"family": "mlp", "tasks": tasks, "width": width, "seed": seed,
                             "unseen": 0.5 + rng.uniform(-0.02, 0.02)})
    table = trial_rows(_frame(rows))
    got = {v.claim: v for v in verdicts(table, chance=0.5)}
    rise = got["transformer: unseen-task accuracy rises with log2 N"]
    assert rise.effect.estimate == pytest.approx(1.0) and rise.p_value < 0.001 and rise.p_adjusted >= rise.p_value
    assert got["MLP: unseen-task accuracy rises with log2 N"].p_value > 0.01
    above = got["N = 128: the transformer's unseen-task accuracy is above the MLP's"]
    assert above.n == 3 and above.effect.estimate == pytest.approx(0.3, abs=0.03)
    assert above.p_floor == pytest.approx(0.125)  # three seeds: the exact test's floor, said so in the report
    assert above.p_adjusted is None  # it can never reach 0.05: outside the Holm family, which holds the two trends
    assert rise.family.startswith("the in-context learning grid's tests") and "(2 tests)" in rise.family
    c = cells(table)
    assert len(c) == 16 and set(c["n"]) == {3}


def _study_file(path, family: str, depth: int) -> str:
    extra = 'sequence_length = 8\n' if family == "transformer" else ""
    optimiser = '[base.train]\noptimizer = "adam"\nlr = 3e-3\nmax_epochs = 2\n' if family == "transformer" else \
        "[base.train]\nmax_epochs = 2\n"
    path.write_text(f"""[study]
name = "tiny_{family}"
mode = "evolve"
sampler = "grid"
n_trials = 4

[base.data]
dataset = "digits"
tasks = 2
{extra}
[base.model]
family = "{family}"

{optimiser}
[base.evolve]
max_iterations = 1

[space]
depth = {depth}
width = 6
"data.tasks" = {{ choices = [2, 16] }}
seed = {{ choices = [0, 1] }}
""")
    return str(path)


def test_study_icl_draws_the_maps_from_two_studies_and_refuses_a_swap(tmp_path, capsys):
    root = str(tmp_path / "runs")
    for family, depth in (("mlp", 2), ("transformer", 1)):
        assert main(["study", "run", _study_file(tmp_path / f"{family}.toml", family, depth), "--root", root]) == 0
    out = tmp_path / "report"
    assert main(["study", "icl", "--mlp", "tiny_mlp", "--transformer", "tiny_transformer", "--root", root,
                 "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    for figure in ("icl_accuracy_map", "icl_width_map", "icl_positions"):
        assert (out / "figures" / f"{figure}.png").is_file() and f"figures/{figure}.png" in text
    assert "chance is 0.1" in text and "8 finished trials" in text
    assert "N = 16: the transformer's unseen-task accuracy is above the MLP's" in text
    capsys.readouterr()
    assert main(["study", "icl", "--mlp", "tiny_transformer", "--transformer", "tiny_mlp", "--root", root,
                 "--out", str(tmp_path / "other")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "holds transformer trials, not mlp" in err
