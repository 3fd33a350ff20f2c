"""--hessian-top: Lanczos top eigenvalues and the full spectrum against torch.autograd.functional.hessian and
numpy's eigvalsh on a tiny network; runs record them; bad values are one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.func import functional_call

from rankprune.losses import per_sample
from rankprune.models import get_family
from rankprune.probes.hessian import full_spectrum, hessian_operator, top_eigenvalues
from rankprune.runfolder import HESSIAN, ITERATIONS


def _reference_hessian(model, x, y, loss):
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def f(theta):
        params, i = {}, 0
        for n, s in zip(names, shapes):
            params[n] = theta[i:i + s.numel()].reshape(s)
            i += s.numel()
        return per_sample(loss, functional_call(model, params, (x,)), y).mean()

    return torch.autograd.functional.hessian(f, flat).numpy()


@pytest.mark.parametrize("loss", ["cross-entropy", "hinge"])
def test_top_eigenvalues_and_the_full_spectrum_match_the_dense_hessian(digits, loss):
    model = get_family("mlp").build(digits.input_shape, [4], digits.n_classes, 3, torch.device("cpu")).double()
    x, y = digits.train.x[:64].double(), digits.train.y[:64]
    expected = np.linalg.eigvalsh(_reference_hessian(model, x, y, loss))  # ascending
    op, n = hessian_operator(model, x, y, loss)
    assert n == sum(p.numel() for p in model.parameters())
    top = top_eigenvalues(op, n, 5, seed=0)
    np.testing.assert_allclose(top, expected[::-1][:5], rtol=1e-4)
    np.testing.assert_allclose(full_spectrum(op, n), expected, rtol=1e-4, atol=1e-8 * abs(expected).max())


def test_runs_record_the_top_eigenvalues_and_the_full_spectrum_of_small_networks(tmp_path, tiny_config, run_controller):
    cfg = tiny_config(probes={"hessian_top": 3, "hessian_samples": 100, "hessian_full_max": 400},
                      model={"width": 6}, evolve={"layers": (1,), "max_iterations": 2})
    run = run_controller(cfg, tmp_path / "run")
    iterations, rows = run.rows(ITERATIONS), run.rows(HESSIAN)
    assert [(r["depth"], r["iteration"]) for r in rows] == [(r["depth"], r["iteration"]) for r in iterations]
    for it, h in zip(iterations, rows):
        assert it["hessian_parameters"] == it["parameters"] == h["parameters"] and it["hessian_samples"] == 100
        assert len(it["hessian_top"]) == 3 and it["hessian_top"] == sorted(it["hessian_top"], reverse=True)
        assert h["full"] is (it["parameters"] <= 400)
        if h["full"]:
            assert len(h["eigenvalues"]) == it["parameters"]
            np.testing.assert_allclose(sorted(h["eigenvalues"])[::-1][:3], it["hessian_top"])


def test_a_run_without_hessian_top_has_no_hessian_table_and_its_resume_adds_none(tmp_path, tiny_config, run_controller):
    cfg = tiny_config(model={"width": 8}, evolve={"layers": (1,), "max_iterations": 1})
    run = run_controller(cfg, tmp_path / "run")
    assert run.rows(ITERATIONS) and not (run.path / HESSIAN).exists()
    run_controller(cfg, tmp_path / "run")  # a resume of the finished run
    run_controller(cfg.replace(evolve={"max_iterations": 2}), tmp_path / "run")  # a resume that extends it
    assert not (run.path / HESSIAN).exists()


@pytest.mark.parametrize("flags, message", [
    (["--hessian-top", "0"], None),  # 0 is off, not an error
    (["--hessian-top", "-1"], "--hessian-top"),
    (["--hessian-top", "100000"], "more eigenvalues than the starting network has parameters"),
    (["--hessian-samples", "0"], "--hessian-samples"),
])
def test_bad_hessian_settings_are_one_line_and_write_nothing(tmp_path, capsys, flags, message):
    from rankprune.cli import main

    out = tmp_path / "run"
    argv = ["evolve", "--dataset", "digits", "--layers", "1", "--width", "8", "--max-iterations", "1", "--max-epochs", "1",
            *flags, "--out", str(out)]
    code = main(argv)
    err = capsys.readouterr().err.strip()
    if message is None:
        assert code == 0
        return
    assert code == 2 and message in err and len(err.splitlines()) == 1 and not out.exists()
