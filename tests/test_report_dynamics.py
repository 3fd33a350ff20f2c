"""The report's training-dynamics sections: movement, the Hessian, and a regression task's fitted function."""

from __future__ import annotations

from rankprune.report import render
from rankprune.runfolder import HESSIAN
from test_report import check_figures, section, table_rows


def test_movement_and_hessian_runs_get_their_figures_and_table(tmp_path, tiny_config, run_controller):
    cfg = tiny_config(probes={"movement": True, "hessian_top": 3, "hessian_samples": 64, "hessian_full_max": 400},
                      model={"width": 4}, evolve={"layers": (1,), "max_iterations": 2})
    run = run_controller(cfg, tmp_path / "run")
    report = render(run.path)
    names = check_figures(report)
    assert {"movement-depth-1", "hessian-top", "hessian-density"} <= names
    rows = table_rows(section(report, "How far training moved the weights"))
    assert len(rows) == len(run.rows("iterations.jsonl"))
    assert all(r[3].startswith("[") for r in rows)  # movement per layer
    assert run.rows(HESSIAN)
    assert "Figure not drawn" not in report.read_text()


def test_a_plain_run_has_no_dynamics_sections(tmp_path, tiny_config, run_controller):
    run = run_controller(tiny_config(evolve={"layers": (1,), "max_iterations": 1}), tmp_path / "run")
    text = render(run.path).read_text()
    for heading in ("How far training moved", "Hessian", "The fitted function", "R^2"):
        assert heading not in text


def test_a_regression_run_draws_its_fitted_function_and_says_accuracy_is_r_squared(tmp_path):
    from rankprune.cli import main

    out = tmp_path / "run"
    assert main(["evolve", "--dataset", "regression:simple", "--points", "10", "--width", "16", "--layers", "1",
                 "--max-iterations", "1", "--max-epochs", "3", "--alpha", "2", "--out", str(out)]) == 0
    report = render(out)
    assert "fitted-function" in check_figures(report)
    text = report.read_text()
    assert "every accuracy in this report is R^2" in text and "10 training points" in text and "alpha 2" in text
    assert "![test R^2 against training time]" in text  # the figures name the metric they draw
    assert "Caveat" not in text and "LeNet" not in text  # no comparison with MNIST's published error


def test_a_hinge_study_report_draws_the_jamming_transition(tmp_path):
    import optuna

    from rankprune.study import default_storage, parse_spec, run_study
    from studyfiles import tiny_study_toml

    text = tiny_study_toml("jam", n_trials=3, max_epochs=3, space='depth = 2\nwidth = { low = 4, high = 32 }\n')
    text = text.replace("[base.train]\n", '[base.train]\nloss = "hinge"\n')
    (tmp_path / "jam.toml").write_text(text)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    run_study(parse_spec(tmp_path / "jam.toml"), default_storage(tmp_path), tmp_path, n_trials=3)
    report = render("jam", root=tmp_path)
    assert "jamming" in check_figures(report)
    assert "N_Delta = N" in section(report, "The jamming transition")


def test_a_cross_entropy_study_has_no_jamming_section(tmp_path):
    import optuna

    from rankprune.study import default_storage, parse_spec, run_study
    from studyfiles import tiny_study_toml

    (tmp_path / "ce.toml").write_text(tiny_study_toml("ce", n_trials=2))
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    run_study(parse_spec(tmp_path / "ce.toml"), default_storage(tmp_path), tmp_path, n_trials=2)
    assert "jamming" not in render("ce", root=tmp_path).read_text()
