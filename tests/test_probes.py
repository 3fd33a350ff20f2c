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
