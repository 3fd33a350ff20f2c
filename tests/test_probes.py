"""The probe seam: every registered probe adds its columns; a new one needs no edit of the controller."""

from __future__ import annotations

import torch

from rankprune.probes import PROBES, register
from rankprune.runfolder import EPOCHS, ITERATIONS


def test_the_built_in_probes_run_in_order():
    assert list(PROBES)[:2] == ["spectra", "activations"]


def test_a_new_probe_adds_columns_to_epoch_and_iteration_rows(tmp_path, tiny_config, run_controller):
    @register("weight_norm_test")
    class WeightNorm:
        def __init__(self):
            self.epochs = 0

        def epoch(self, ctx):
            self.epochs += 1
            return {"total_weight_norm": float(sum(w.norm() ** 2 for w in ctx.model.weights()) ** 0.5)}

        def iteration(self, ctx):
            return {"probe_epochs_seen": self.epochs, "probe_widths": list(ctx.model.widths)}

    try:
        run = run_controller(tiny_config(evolve={"layers": (1,), "max_iterations": 2}), tmp_path / "run")
    finally:
        del PROBES["weight_norm_test"]
    epochs, iterations = run.rows(EPOCHS), run.rows(ITERATIONS)
    assert all(r["total_weight_norm"] > 0 for r in epochs)
    for it in iterations:
        assert it["probe_epochs_seen"] == it["epochs"] and it["probe_widths"] == it["widths"]


def test_every_iteration_keeps_its_starting_weights(tmp_path, tiny_config, run_controller):
    run = run_controller(tiny_config(evolve={"layers": (1,), "max_iterations": 2, "rebuild": "reinit"}), tmp_path / "run")
    for it in run.rows(ITERATIONS):
        start, end = run.load_weights(1, it["iteration"], start=True), run.load_weights(1, it["iteration"])
        assert start.keys() == end.keys()
        assert [tuple(v.shape) for v in start.values()] == [tuple(v.shape) for v in end.values()]
        assert any(not torch.equal(start[k], end[k]) for k in start)  # training moved it


def test_a_warm_run_anneals_a_copy_of_the_full_width_network_as_its_reference(tmp_path, tiny_config, run_controller):
    """Iteration 0 of a warm run stops at its first plateau; the reference is that network annealed as the chosen
    one is, on a copy: the shrink path and the run's cumulative cost are what they would be without it."""
    cfg = tiny_config(evolve={"layers": (1,), "max_iterations": 2, "rebuild": "warm"}, train={"lr_drops": 1})
    run = run_controller(cfg, tmp_path / "run")
    first, *rest = run.rows(ITERATIONS)
    assert first["reference_epochs"] >= 1 and first["reference_seconds"] > 0 and first["reference_flops"] > 0
    assert 0 <= first["reference_test_acc"] <= 1 and 0 <= first["reference_val_acc"] <= 1
    assert first["cumulative_seconds"] == first["seconds"]  # the reference's seconds are not the method's
    assert all("reference_test_acc" not in r for r in rest)
    # The copy was annealed, not the network the shrink iterations start from: iteration 0's saved weights
    # reproduce its own recorded accuracy.
    from rankprune.evolve.iteration import restore
    from rankprune.data import load
    from rankprune.train import evaluate

    data = load(cfg.data, cfg.seed)
    assert evaluate(restore(cfg, data, run, 1, first), data.test).acc == first["test_acc"]
    summary = run.read("depths.json")["1"]
    assert summary["reference_test_acc"] == first["reference_test_acc"]


def test_runs_that_anneal_every_iteration_have_no_reference(tmp_path, tiny_config, run_controller):
    for name, overrides in {"reinit": {"evolve": {"layers": (1,), "max_iterations": 2, "rebuild": "reinit"}},
                            "no drops": {"evolve": {"layers": (1,), "max_iterations": 2}, "train": {"lr_drops": 0}}}.items():
        run = run_controller(tiny_config(**overrides), tmp_path / name.replace(" ", "-"))
        assert all("reference_test_acc" not in r for r in run.rows(ITERATIONS)), name
        assert run.read("depths.json")["1"]["reference_test_acc"] is None
