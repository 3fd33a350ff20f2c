"""Run folders of older formats: tests/data/run-format-1 is a real run made before config.json carried a format
version (digits, width 12, depths 1-2, warm rebuild, 2 iterations each); the report renders it and a resume with
a larger iteration cap continues it under the current code."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from rankprune.cli import main
from rankprune.config import ConfigError, RunConfig
from rankprune.records import FORMAT_VERSION, config_format
from rankprune.report import render
from rankprune.runfolder import CONFIG, DEPTHS, EPOCHS, ITERATIONS, STATUS, RunFolder

OLD = Path(__file__).parent / "data" / "run-format-1"


@pytest.fixture
def old_run(tmp_path) -> Path:
    copy = tmp_path / "old"
    shutil.copytree(OLD, copy)
    return copy


def test_the_kept_folder_is_format_1_and_reads_as_the_current_format():
    stored = json.loads((OLD / CONFIG).read_text())
    assert config_format(stored) == 1 and "family" not in stored["model"]
    cfg = RunConfig.from_dict(stored)
    assert cfg.model.family == "mlp" and cfg.to_dict()["format_version"] == FORMAT_VERSION
    assert all("phase" in r and "decision_acc" in r for r in RunFolder(OLD).rows(ITERATIONS))


def test_a_config_from_a_newer_rankprune_is_refused():
    with pytest.raises(ConfigError, match="newer rankprune"):
        RunConfig.from_dict({**RunConfig().to_dict(), "format_version": FORMAT_VERSION + 1})


def test_the_report_renders_a_format_1_run(old_run):
    report = render(old_run)
    text = report.read_text()
    assert text.startswith("# Run report") and "## Depths" in text and "## Iterations" in text
    assert "Figure not drawn" not in text
    assert len(list((report.parent / "figures").glob("*.png"))) >= 5


def test_a_format_1_run_resumes_and_extends_under_the_current_code(old_run, capsys):
    before = RunFolder(old_run).rows(ITERATIONS)
    assert main(["evolve", "--out", str(old_run), "--resume", "--max-iterations", "3"]) == 0, capsys.readouterr().err
    run = RunFolder(old_run)
    after = run.rows(ITERATIONS)
    assert len(after) > len(before)
    # the finished iterations the old code wrote are kept as they were, up to their (shrink) last one
    kept = [r for r in before if r["phase"] == "shrink"]
    assert [(r["depth"], r["iteration"], r["widths"]) for r in after if (r["depth"], r["iteration"]) in
            {(k["depth"], k["iteration"]) for k in kept}] == [(k["depth"], k["iteration"], k["widths"]) for k in kept]
    assert json.loads((old_run / STATUS).read_text())["state"] == "finished"
    assert set(json.loads((old_run / DEPTHS).read_text())) == {"1", "2"}
    keys = [(r["depth"], r["iteration"], r["epoch"]) for r in run.rows(EPOCHS)]
    assert len(keys) == len(set(keys))


def test_a_run_made_before_saturate_existed_keeps_saturating_by_accuracy(old_run, capsys):
    """Format < 3 trained until accuracy saturated; the default changed to both, and an old run must not change
    meaning on resume or in its report. A user's TOML (from_dict) takes today's default."""
    stored = json.loads((OLD / CONFIG).read_text())
    assert RunConfig.from_stored(stored).train.saturate == "accuracy"
    assert RunConfig.from_stored({**stored, "format_version": 2}).train.saturate == "accuracy"
    assert RunConfig.from_stored(RunConfig().to_dict()).train.saturate == "both"
    assert RunConfig.from_dict({"train": {"lr": 0.1}}).train.saturate == "both"
    assert "validation accuracy stops rising" in render(old_run).read_text()
    assert main(["evolve", "--out", str(old_run), "--resume", "--max-iterations", "3"]) == 0, capsys.readouterr().err
    assert json.loads((old_run / CONFIG).read_text())["train"]["saturate"] == "accuracy"
