"""--label-noise: a seeded fraction of training labels replaced; validation and test never touched."""

from __future__ import annotations

import math

import pytest
import torch

from rankprune.config import ConfigError, RunConfig
from rankprune.data import load
from rankprune.runfolder import ITERATIONS


def digits(noise: float, seed: int = 0, **data):
    cfg = RunConfig().replace(data={"dataset": "digits", "label_noise": noise, **data}, seed=seed).validate()
    return load(cfg.data, cfg.seed)


@pytest.mark.parametrize("noise", [0.1, 0.25, 0.5])
@pytest.mark.parametrize("seed", [0, 7])
def test_the_fraction_relabelled_is_p_and_only_training_labels_move(noise, seed):
    clean, noisy = digits(0.0, seed), digits(noise, seed)
    n, k = len(noisy.train), noisy.n_classes
    assert len(noisy.relabelled) == round(noise * n)
    # inputs, validation and test are exactly the noise-free run's
    for a, b in ((clean.train.x, noisy.train.x), (clean.val.x, noisy.val.x), (clean.val.y, noisy.val.y),
                 (clean.test.x, noisy.test.x), (clean.test.y, noisy.test.y)):
        assert torch.equal(a, b)
    assert torch.equal(noisy.true_labels, clean.train.y)
    changed = (noisy.train.y != clean.train.y).nonzero().flatten()
    assert set(changed.tolist()) <= set(noisy.relabelled.tolist())  # nothing outside the drawn rows moved
    # a uniformly random class keeps the true one with probability 1/k: changed ~ Binomial(relabelled, 1 - 1/k)
    m, p = len(noisy.relabelled), 1 - 1 / k
    assert abs(len(changed) - m * p) <= 4 * math.sqrt(m * p * (1 - p))
    assert int(noisy.train.y.max()) < k and int(noisy.train.y.min()) >= 0


def test_the_same_seed_relabels_the_same_rows_and_another_seed_other_rows():
    a, b, c = digits(0.25, 3), digits(0.25, 3), digits(0.25, 4)
    assert torch.equal(a.relabelled, b.relabelled) and torch.equal(a.train.y, b.train.y)
    assert not torch.equal(a.true_labels[a.relabelled], c.true_labels[c.relabelled[: len(a.relabelled)]]) or \
        not torch.equal(a.relabelled, c.relabelled)


def test_no_noise_records_nothing():
    d = digits(0.0)
    assert d.relabelled is None and "label_noise" not in d.describe()


@pytest.mark.parametrize("bad", [1.0, -0.1, 1.5])
def test_noise_outside_0_1_is_a_config_error(bad):
    with pytest.raises(ConfigError, match="label noise"):
        RunConfig().replace(data={"label_noise": bad}).validate()


def test_every_iteration_reports_memorisation_and_the_run_records_the_rows(tmp_path, tiny_config, run_controller):
    run = run_controller(tiny_config(data={"label_noise": 0.3}, evolve={"layers": (1,), "max_iterations": 2}), tmp_path / "run")
    data = digits(0.3)
    for row in run.rows(ITERATIONS):
        for key in ("train_acc_relabelled", "train_acc_relabelled_true", "train_acc_relabelled_chance", "train_acc_clean"):
            assert 0 <= row[key] <= 1
        assert row["relabelled_rows"] == "changed"
        # scored on the rows whose label changed; the rest of the training split is clean
        n, m = len(data.train), int((data.train.y != data.true_labels).sum())
        # the overall training accuracy is the rows' mix of the two (against the labels trained on)
        assert row["train_acc"] == pytest.approx((m * row["train_acc_relabelled"] + (n - m) * row["train_acc_clean"]) / n)
    clean = run_controller(tiny_config(evolve={"layers": (1,), "max_iterations": 1}), tmp_path / "clean")
    assert all("train_acc_clean" not in r for r in clean.rows(ITERATIONS))
    # depths.json carries the chosen network's memorisation, and so does a study trial (with memorisation above
    # chance), so a finding can test rank against it; a clean run carries none of it
    from rankprune.runfolder import DEPTHS
    from rankprune.study import _task_outcomes

    summary = run.read(DEPTHS)["1"]
    chosen = next(r for r in run.rows(ITERATIONS) if r["iteration"] == summary["chosen_iteration"])
    assert summary["train_acc_relabelled"] == chosen["train_acc_relabelled"]
    outcomes = _task_outcomes(summary)
    assert outcomes["memorisation"] == pytest.approx(chosen["train_acc_relabelled"] - chosen["train_acc_relabelled_chance"])
    assert "train_acc_relabelled" not in clean.read(DEPTHS)["1"] and _task_outcomes(clean.read(DEPTHS)["1"]) == {}


def test_the_cli_records_the_relabelled_rows_in_data_json(tmp_path):
    import json

    from rankprune.cli import main

    out = tmp_path / "run"
    assert main(["evolve", "--dataset", "digits", "--layers", "1", "--width", "16", "--max-iterations", "1",
                 "--max-epochs", "2", "--label-noise", "0.2", "--seed", "5", "--out", str(out)]) == 0
    recorded = json.loads((out / "data.json").read_text())["label_noise"]
    data = digits(0.2, seed=5)
    assert recorded["rows"] == data.relabelled.tolist() and recorded["relabelled"] == len(data.relabelled)
    assert recorded["label_changed"] == int((data.train.y != data.true_labels).sum())
    assert recorded["changed_rows"] == (data.train.y != data.true_labels).nonzero().flatten().tolist()
    assert json.loads((out / "config.json").read_text())["data"]["label_noise"] == 0.2


class _Oracle(torch.nn.Module):
    """Predicts the true label of every training row it was given (found by exact match): it knows the task there
    and has memorised none of the random labels."""

    def __init__(self, x: torch.Tensor, labels: torch.Tensor, n_classes: int):
        super().__init__()
        self.x, self.logits = x.flatten(1), torch.nn.functional.one_hot(labels, n_classes).float()

    def forward(self, x):
        return self.logits[torch.cdist(x.flatten(1), self.x).argmin(1)]


def _memorisation(data, model) -> dict:
    from rankprune.probes.base import ProbeContext
    from rankprune.probes.memorisation import MemorisationProbe

    ctx = ProbeContext(RunConfig(), data, None, model, 1, 0, "fp32", data.train.x, RunConfig().train, 0.0)
    return MemorisationProbe().iteration(ctx)


def test_a_network_that_memorised_nothing_scores_its_chance_level_on_the_changed_rows():
    """The probe scores only the rows whose label changed. A network that predicts the true class scores exactly 0
    there (against all drawn rows it would score the ~1/K that kept their class), and so does its chance level; one
    whose predictions do not depend on the random labels (an untrained network) scores its chance level
    (1 - accuracy against the true labels) / (K - 1), within sampling noise."""
    from rankprune.models import build_mlp

    data = digits(0.5)
    changed = (data.train.y != data.true_labels).nonzero().flatten()
    assert 0 < len(changed) < len(data.relabelled)  # some drawn rows kept their true class
    oracle = _memorisation(data, _Oracle(data.train.x, data.true_labels, data.n_classes))
    assert oracle["train_acc_relabelled"] == 0 and oracle["train_acc_relabelled_true"] == 1
    assert oracle["train_acc_relabelled_chance"] == 0 and oracle["train_acc_clean"] == 1
    for seed in range(3):
        blind = _memorisation(data, build_mlp(data.input_shape, [16], data.n_classes, seed=seed))
        assert blind["train_acc_relabelled_chance"] == pytest.approx((1 - blind["train_acc_relabelled_true"]) / (data.n_classes - 1))
        sd = math.sqrt(0.1 * 0.9 / len(changed))  # a binomial proportion near 1/K over the changed rows
        assert abs(blind["train_acc_relabelled"] - blind["train_acc_relabelled_chance"]) < 4 * sd


def test_rows_of_older_runs_say_memorisation_was_scored_on_every_drawn_row():
    from rankprune.records import upgrade_row

    assert upgrade_row(ITERATIONS, {"train_acc_relabelled": 0.2})["relabelled_rows"] == "all"
    assert "relabelled_rows" not in upgrade_row(ITERATIONS, {"train_acc": 0.9})
