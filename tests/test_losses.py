"""--loss: the quadratic hinge and N_Delta against hand-computed values; MSE; runs record N_Delta."""

from __future__ import annotations

import pytest
import torch

from rankprune.config import ConfigError, RunConfig
from rankprune.data import Split
from rankprune.losses import per_sample, unsatisfied
from rankprune.runfolder import EPOCHS, ITERATIONS
from rankprune.train import evaluate

# Three samples, three classes.
LOGITS = torch.tensor([[2.0, -1.5, -3.0],   # true 0: margins 2, 1.5, 3 -> all satisfied, loss 0
                       [0.5, -2.0, 1.0],    # true 2: margins -0.5, 2, 1 -> Delta 1.5, -1, 0: two unsatisfied (>= 0)
                       [0.0, 0.0, 0.0]])    # true 1: every margin 0 -> all three unsatisfied
LABELS = torch.tensor([0, 2, 1])


def test_the_quadratic_hinge_by_hand():
    # sample 1: max(0, 1 - (-1)(0.5))^2 = 1.5^2 = 2.25; the others satisfied -> 2.25 / 3 = 0.75
    # sample 2: (1 - 0)^2 for each of three outputs -> mean 1
    expected = torch.tensor([0.0, 0.75, 1.0])
    assert torch.allclose(per_sample("hinge", LOGITS, LABELS), expected)
    # one constraint per sample and output; Delta = 0 (margin exactly 1) counts, as the jamming experiments count it
    assert unsatisfied(LOGITS, LABELS).tolist() == [0, 2, 3]


def test_mse_and_cross_entropy_by_hand():
    # sample 0: ((2-1)^2 + 1.5^2 + 3^2) / 3 = (1 + 2.25 + 9) / 3
    assert per_sample("mse", LOGITS, LABELS)[0].item() == pytest.approx(12.25 / 3)
    assert per_sample("cross-entropy", LOGITS, LABELS)[2].item() == pytest.approx(torch.log(torch.tensor(3.0)).item())


def test_evaluate_counts_n_delta_and_averages_the_chosen_loss():
    model = torch.nn.Identity()
    split = Split(LOGITS, LABELS)
    hinge = evaluate(model, split, loss="hinge")
    assert hinge.n_delta == 5 and hinge.loss == pytest.approx(1.75 / 3) and hinge.acc == pytest.approx(2 / 3)
    # sample 2's all-zero logits argmax to class 0, not its label 1; the others are right


def test_an_unknown_loss_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown loss"):
        RunConfig().replace(train={"loss": "hingee"}).validate()


def test_a_hinge_run_records_n_delta_every_epoch_and_iteration(tmp_path, tiny_config, run_controller):
    run = run_controller(tiny_config(train={"loss": "hinge"}, evolve={"layers": (1,), "max_iterations": 2}), tmp_path / "run")
    epochs = run.rows(EPOCHS)
    assert all(0 <= r["n_delta"] for r in epochs)
    for row in run.rows(ITERATIONS):
        assert 0 <= row["n_delta_fraction"] <= 1 and row["n_delta_per_parameter"] == pytest.approx(row["n_delta"] / row["parameters"])
        assert row["n_delta_per_width"] == pytest.approx(row["n_delta"] / (sum(row["widths"]) / len(row["widths"])))
    plain = run_controller(tiny_config(evolve={"layers": (1,), "max_iterations": 1}), tmp_path / "plain")
    assert all("n_delta" not in r for r in plain.rows(EPOCHS))


def test_the_loss_help_names_every_loss_and_says_which_is_the_default(capsys):
    from rankprune.cli import main
    from rankprune.losses import LOSSES

    with pytest.raises(SystemExit) as done:
        main(["evolve", "--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    start = text.rindex("--loss LOSS")  # its entry, after the usage line
    loss = text[start:text.index("--samples-per-epoch", start)]
    assert all(name in loss for name in LOSSES)
    assert "mse (mean squared error" in loss  # what mse is, not the default in parentheses after it
    assert f"default: {RunConfig().train.loss}, and mse for the regression datasets" in loss
