"""--tasks N: random projections with label permutations, drawn as the experiment draws them (augmented: lazily
generated tasks, data that grows with N, log2 N evaluation tasks) or as runs before config format 5 did (fixed:
task 0 the identity, tasks assigned to the rows of fixed splits); seen and unseen test accuracy."""

from __future__ import annotations

import pytest
import torch

from rankprune.config import ConfigError, RunConfig
from rankprune.data import load
from rankprune.runfolder import EPOCHS, ITERATIONS
from rankprune.tasks import TaskStream, apply_tasks, assign_tasks, draw_samples, every_pair, make_tasks


def digits(**data):
    cfg = RunConfig().replace(data={"dataset": "digits", **data}).validate()
    return load(cfg.data, cfg.seed)


def test_task_0_is_the_identity_and_every_task_is_invertible_with_a_label_permutation():
    tasks = make_tasks(5, 64, 10, seed=3, identity_first=True)
    assert torch.equal(tasks.projections[0], torch.eye(64)) and torch.equal(tasks.permutations[0], torch.arange(10))
    for t in range(5):
        assert torch.linalg.matrix_rank(tasks.projections[t].double()) == 64  # invertible
        assert sorted(tasks.permutations[t].tolist()) == list(range(10))
    # variance 1/d: a projection keeps the squared norm of an input on average
    x = torch.randn(2000, 64, generator=torch.Generator().manual_seed(0))
    ratio = (x @ tasks.projections[1].T).square().sum() / x.square().sum()
    assert 0.8 < float(ratio) < 1.2
    unseen = make_tasks(5, 64, 10, seed=4, identity_first=False)
    assert not torch.equal(unseen.projections[0], torch.eye(64))


def test_applying_a_task_projects_inputs_and_permutes_labels_row_by_row():
    tasks = make_tasks(3, 16, 4, seed=0, identity_first=True)
    x, y = torch.randn(30, 1, 4, 4), torch.randint(0, 4, (30,))
    task = assign_tasks(30, 3, seed=1)
    px, py = apply_tasks(x, y, task, tasks)
    assert px.shape == x.shape
    for i in range(30):
        t = int(task[i])
        assert torch.allclose(px[i].flatten(), tasks.projections[t] @ x[i].flatten(), atol=1e-5)
        assert py[i] == tasks.permutations[t, y[i]]
    assert set(task.tolist()) == {0, 1, 2}


def test_fixed_one_task_is_the_plain_dataset_and_more_tasks_are_reproducible():
    plain, one = digits(), digits(tasks=1, task_sampling="fixed")
    for name in ("train", "val", "test"):
        assert torch.equal(getattr(plain, name).x, getattr(one, name).x) and torch.equal(getattr(plain, name).y, getattr(one, name).y)
    a, b = digits(tasks=4, task_sampling="fixed"), digits(tasks=4, task_sampling="fixed")
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.unseen_test.y, b.unseen_test.y)
    assert not torch.equal(a.train.x, plain.train.x)
    assert a.unseen_test.x.shape == a.test.x.shape and not torch.equal(a.unseen_test.x, a.test.x)
    assert a.describe()["tasks"] == 4


@pytest.mark.parametrize("bad", [0, -2])
def test_fewer_than_one_task_is_a_config_error(bad):
    with pytest.raises(ConfigError, match="--tasks"):
        RunConfig().replace(data={"tasks": bad}).validate()


def test_a_run_records_seen_and_unseen_task_accuracy(tmp_path, tiny_config, run_controller):
    run = run_controller(tiny_config(data={"tasks": 2}, evolve={"layers": (1,), "max_iterations": 1}), tmp_path / "run")
    for row in run.rows(ITERATIONS):
        assert 0 <= row["test_acc_unseen_tasks"] <= 1 and row["test_loss_unseen_tasks"] > 0
        # unseen tasks permute the labels the network never saw permuted so: far below the seen tasks
        assert row["test_acc_unseen_tasks"] < row["test_acc"]
    plain = run_controller(tiny_config(evolve={"layers": (1,), "max_iterations": 1}), tmp_path / "plain")
    assert all("test_acc_unseen_tasks" not in r for r in plain.rows(ITERATIONS))


@pytest.mark.parametrize("family", ["mlp", "cnn"])
def test_every_knob_composes_with_the_others_and_with_each_family(tmp_path, tiny_config, run_controller, family):
    """All five knobs at once, on both families: the run finishes, and each knob leaves its mark."""
    cfg = tiny_config(data={"label_noise": 0.2, "classes": 4, "tasks": 2, "train_fraction": 0.5},
                      model={"family": family, "width": 8 if family == "cnn" else 32},
                      train={"loss": "hinge", "samples_per_epoch": 600, "max_epochs": 2},
                      evolve={"layers": (2,), "max_iterations": 2})
    run = run_controller(cfg, tmp_path / "run")
    state = torch.load(run.path / "weights" / "depth-2-iteration-00.pt")
    assert list(state.values())[-1].shape == (4,)  # the output layer's bias: 4 classes
    epochs = run.rows(EPOCHS)
    assert all(e["samples"] == 600 and "n_delta" in e for e in epochs)
    for row in run.rows(ITERATIONS):
        assert row["test_acc_unseen_tasks"] is not None and row["train_acc_relabelled"] is not None
        assert row["n_delta_fraction"] is not None


# --- the experiment's tasks ("augmented") ----------------------------------------------------------------------
def test_a_task_stream_makes_each_task_from_its_seed_alone():
    stream = TaskStream(seed=11, d=64, n_classes=10)
    again = TaskStream(seed=11, d=64, n_classes=10)
    assert torch.equal(stream.projection(2**17 + 5), again.projection(2**17 + 5))  # any t, in any order
    assert torch.equal(stream.permutation(7), again.permutation(7))
    assert not torch.equal(stream.projection(0), stream.projection(1))
    assert sorted(stream.permutation(3).tolist()) == list(range(10))
    x = torch.randn(3000, 64, generator=torch.Generator().manual_seed(0))
    ratio = (x @ stream.projection(4).T).square().sum() / x.square().sum()  # variance 1/d
    assert 0.8 < float(ratio) < 1.2


def test_seen_and_unseen_tasks_never_share_a_projection():
    data = digits(tasks=8)
    k = data.seen_eval_tasks
    assert k == 3  # log2 8
    seen, unseen = (TaskStream(derive, 64, 10) for derive in _stream_seeds(seed=0))
    for i in range(8):
        for j in range(k):
            assert not torch.allclose(seen.projection(i), unseen.projection(j))


def _stream_seeds(seed):
    from rankprune.seeds import TASKS, UNSEEN_TASKS, derive_seed

    return derive_seed(seed, TASKS), derive_seed(seed, UNSEEN_TASKS)


def test_the_data_grows_with_the_tasks_up_to_the_cap_and_evaluates_on_log2_n_of_them():
    plain = digits()
    n_train, n_val, n_test = len(plain.train), len(plain.val), len(plain.test)
    for n, cap in ((1, 10**6), (4, 10**6), (64, 20_000), (2**18, 5_000)):
        data = digits(tasks=n, task_samples=cap)
        k = max(1, n.bit_length() - 1)
        assert len(data.train) == min(n_train * n, cap)
        assert len(data.val) == min(n_val * k, cap) and len(data.test) == min(n_test * k, cap)
        assert len(data.unseen_test) == min(n_test * k, cap)
        assert data.describe()["task_sampling"] == "augmented" and data.describe()["eval_tasks"] == min(k, n)
    one = digits(tasks=1)
    assert not torch.equal(one.test.x, plain.test.x)  # no identity task unless asked for (task_sampling fixed)


def test_evaluation_pairs_are_every_held_out_image_under_every_seen_task():
    stream = TaskStream(seed=5, d=16, n_classes=4)
    x, y = torch.randn(10, 1, 4, 4), torch.randint(0, 4, (10,))
    px, py, task = every_pair(x, y, 3, stream, cap=10**6, seed=0)
    assert len(py) == 30 and sorted(set(task.tolist())) == [0, 1, 2]
    for i in range(30):
        t, row = int(task[i]), i % 10
        assert torch.allclose(px[i].flatten(), stream.projection(t) @ x[row].flatten(), atol=1e-5)
        assert py[i] == stream.permutation(t)[y[row]]
    capped = every_pair(x, y, 3, stream, cap=7, seed=0)
    assert len(capped[1]) == 7
    sx, sy, st = draw_samples(x, y, 3, 50, stream, seed=1)
    assert len(sy) == 50 and int(st.max()) <= 2 and torch.equal(draw_samples(x, y, 3, 50, stream, seed=1)[0], sx)


def test_runs_made_before_format_5_keep_their_fixed_tasks():
    old = RunConfig.from_stored({"format_version": 4, "data": {"dataset": "digits", "tasks": 4}})
    assert old.data.task_sampling == "fixed"
    assert RunConfig.from_stored(RunConfig().to_dict()).data.task_sampling == "augmented"
    with pytest.raises(ConfigError, match="task sampling"):
        RunConfig().replace(data={"task_sampling": "random"}).validate()


def test_the_report_header_says_how_the_tasks_were_drawn():
    from rankprune.config import task_knobs

    new = task_knobs(RunConfig().replace(data={"tasks": 8}).to_dict())
    assert any("8 augmented tasks" in k and "200,000 samples" in k and "log2 N" in k for k in new)
    old = task_knobs({"format_version": 4, "data": {"tasks": 8}})  # an older config.json says nothing of sampling
    assert any("fixed splits, task 0 the identity" in k for k in old)
