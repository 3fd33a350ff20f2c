"""A grid study's workers must number its cells alike: the seed the first worker shuffled them by is recorded, and
another --seed is refused in one line (two workers at seeds 0 and 1 ran some cells twice and others never)."""

from __future__ import annotations

from rankprune.cli import main


def test_a_grid_study_refuses_a_worker_with_another_seed(tmp_path, capsys):
    spec = tmp_path / "grid.toml"
    spec.write_text("""[study]
name = "grid_seed"
mode = "survey"
sampler = "grid"
seed = 3
n_trials = 1

[base.data]
dataset = "digits"

[base.train]
max_epochs = 1

[space]
depth = 1
width = { choices = [4, 6] }
""")
    root = str(tmp_path / "runs")
    assert main(["study", "run", str(spec), "--root", root, "--n-trials", "1"]) == 0
    assert main(["study", "run", str(spec), "--root", root, "--n-trials", "1", "--seed", "3"]) == 0  # the same: fine
    capsys.readouterr()
    assert main(["study", "run", str(spec), "--root", root, "--n-trials", "1", "--seed", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and "numbers its grid's cells by seed 3" in err.splitlines()[-1]


def test_a_grid_trial_killed_before_its_parameters_leaves_no_cell_unrun(tmp_path):
    """A worker SIGKILLed between a trial's ask and its first parameter leaves a FAIL trial without parameters (once
    its heartbeats are stale). Its retry takes a cell no trial holds, and the grid's other cells all still run: the
    empty trial holds no cell of its own (a killed suite once ended 7 of 8 cells complete, CI at e8d0f1d)."""
    import optuna

    from rankprune.study import make_sampler, parse_spec, run_study
    from studyfiles import tiny_study_toml

    file = tmp_path / "grid.toml"
    file.write_text(tiny_study_toml("lost", sampler="grid", space="depth = 1\nwidth = { choices = [8, 12, 16] }\n"))
    spec = parse_spec(file)
    url = f"sqlite:///{tmp_path / 'studies.sqlite3'}"
    run_study(spec, url, tmp_path / "runs", n_trials=1)
    study = optuna.load_study(study_name="lost", storage=url, sampler=make_sampler(spec, spec.seed))
    lost = study.ask()  # numbered by the grid, never given its parameters: the kill landed here
    frozen = study.trials[lost.number]
    assert "grid_id" in frozen.system_attrs and not frozen.params
    study.tell(lost, state=optuna.trial.TrialState.FAIL)  # as fail_stale_trials leaves it: no reason
    run_study(spec, url, tmp_path / "runs", until=3)
    trials = optuna.load_study(study_name="lost", storage=url).trials
    complete = sorted(t.params["width"] for t in trials if t.state == optuna.trial.TrialState.COMPLETE)
    assert complete == [8, 12, 16]
    assert [t.user_attrs.get("retry_of") for t in trials if "retry_of" in t.user_attrs] == [lost.number]
