"""The Python API: the README's snippet as it stands, runs on a user's tensors, and loading a saved network."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import rankprune as rp
from rankprune.data import load
from rankprune.runfolder import CONFIG, DATA, DEPTHS, STATUS

README = Path(__file__).resolve().parents[1] / "README.md"
GUARD_S = 300  # a hung child fails the test instead of the suite; not a timing assertion


def readme_snippet() -> str:
    text = README.read_text()
    match = re.search(r"<!-- python-api:[^>]*-->\s*```python\n(.*?)```", text, re.S)
    assert match, "README has no python-api block"
    return match.group(1)


def test_the_readme_snippet_runs_as_it_stands(tmp_path):
    code = readme_snippet()
    assert len([line for line in code.splitlines() if line.strip()]) < 15 + 3  # "under 15 lines" of API use, plus imports
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=GUARD_S,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    assert "stop_reason" in done.stdout and "val_acc" in done.stdout
    for name in ("digits", "own"):
        run = tmp_path / "runs" / name
        assert json.loads((run / STATUS).read_text())["state"] == "finished"
        assert set(json.loads((run / DEPTHS).read_text())) == {"1", "2"}
    assert json.loads((tmp_path / "runs" / "own" / CONFIG).read_text())["data"]["dataset"] == "tensors"
    assert json.loads((tmp_path / "runs" / "own" / DATA).read_text())["n_features"] == 20


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory, tiny_config):
    cfg = tiny_config(evolve={"layers": (1, 2), "max_iterations": 2})
    return cfg, rp.run(cfg, out=tmp_path_factory.mktemp("api") / "run", progress=False)


def test_run_returns_the_folders_tables(digits_run):
    cfg, run = digits_run
    assert run.status == "finished" and run.config == cfg.resolved()  # the family's defaults filled in (rank source)
    assert run.depths["depth"].tolist() == [1, 2]
    assert len(run.epochs) == run.iterations["epochs"].sum()
    assert set(run.spectra["depth"]) == {1, 2}
    assert rp.open_run(run.path).depths.equals(run.depths)


def test_a_loaded_network_takes_raw_inputs(digits_run):
    cfg, run = digits_run
    splits = load(cfg.data, cfg.seed)
    described = json.loads((run.path / DATA).read_text())
    raw = splits.test.x * described["normalisation"]["std"] + described["normalisation"]["mean"]  # undo it
    assert 0 <= float(raw.min()) and float(raw.max()) <= 1 + 1e-5  # digits pixels / 16
    net = rp.load_network(run.path, depth=2)
    assert [m.out_features for m in net.network.linears[:-1]] == run.depths.set_index("depth").loc[2, "widths"]
    acc = (net(raw).argmax(1) == splits.test.y).float().mean().item()
    assert acc == pytest.approx(run.depths.set_index("depth").loc[2, "test_acc"], abs=1e-6)  # one image is 0.003
    # an iteration's network, too, and images of shape (N, 1, 8, 8) are flattened
    first = rp.load_network(run.path, depth=1, iteration=0)
    assert first(raw.reshape(-1, 1, 8, 8)).shape == (len(raw), 10)


def test_run_tensors_fits_any_feature_and_class_count(tmp_path, tiny_config):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(500, 7, generator=g)
    y = (x[:, 0] > 0).long() * 2 + (x[:, 1] > 0).long()  # 4 classes
    cfg = tiny_config(evolve={"layers": (1,), "max_iterations": 1})
    run = rp.run_tensors(cfg, train=(x[:300], y[:300]), val=(x[300:400], y[300:400]), test=(x[400:], y[400:]),
                         out=tmp_path / "own", progress=False)
    described = json.loads((run.path / DATA).read_text())
    assert (described["n_features"], described["n_classes"], described["n_train"]) == (7, 4, 300)
    net = rp.load_network(run.path, depth=1)
    acc = (net(x[400:]).argmax(1) == y[400:]).float().mean().item()
    assert acc == pytest.approx(run.depths["test_acc"][0], abs=1e-6)
    assert acc > 0.6  # a learnable task, learnt


@pytest.mark.parametrize("train, message", [
    ((torch.randn(10, 3),), "pair"),
    ((torch.randn(10, 3), torch.zeros(9, dtype=torch.long)), "same N"),
    ((torch.randn(10, 3), torch.zeros(10)), "integer class labels"),
    ((torch.full((10, 3), float("nan")), torch.zeros(10, dtype=torch.long)), "finite"),
])
def test_bad_tensors_are_one_line_config_errors_and_write_nothing(tmp_path, tiny_config, train, message):
    ok = (torch.randn(10, 3), torch.zeros(10, dtype=torch.long))
    with pytest.raises(rp.ConfigError, match=message):
        rp.run_tensors(tiny_config(), train=train, val=ok, test=ok, out=tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_open_run_and_load_network_errors(tmp_path, digits_run):
    with pytest.raises(rp.ConfigError, match="not a run folder"):
        rp.open_run(tmp_path)
    _cfg, run = digits_run
    with pytest.raises(rp.ConfigError, match=r"depth 7 was never run in .* \(its depths: 1, 2\)$"):
        rp.load_network(run.path, depth=7)
    # a depth of the run's that has not finished: as a run interrupted in depth 2 leaves its folder
    unfinished = tmp_path / "unfinished"
    shutil.copytree(run.path, unfinished)
    depths = json.loads((unfinished / DEPTHS).read_text())
    del depths["2"]
    (unfinished / DEPTHS).write_text(json.dumps(depths))
    with pytest.raises(rp.ConfigError, match=r"depth 2 has not finished yet in .*finished depths: 1$"):
        rp.load_network(unfinished, depth=2)
    with pytest.raises(rp.ConfigError, match="no finished iteration 9"):
        rp.load_network(run.path, depth=1, iteration=9)
    with pytest.raises(rp.ConfigError, match="depth 7 was never run"):
        rp.load_network(run.path, depth=7, iteration=0)


def test_import_rankprune_does_not_import_torch():
    done = subprocess.run([sys.executable, "-c", "import sys, rankprune; print('torch' in sys.modules)"],
                          capture_output=True, text=True, timeout=GUARD_S)
    assert done.stdout.strip() == "False", done.stderr


def test_a_tiny_validation_split_warns_in_python_too(tmp_path, tiny_config):
    x, y = torch.randn(200, 5), torch.randint(0, 2, (200,))
    with pytest.warns(UserWarning, match="validation split has only 40 rows"):
        rp.run_tensors(tiny_config(evolve={"layers": (1,), "max_iterations": 1}), train=(x[:120], y[:120]),
                       val=(x[120:160], y[120:160]), test=(x[160:], y[160:]), out=tmp_path / "r", progress=False)
