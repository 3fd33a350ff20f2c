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
