"""--rank-source weights|activations: what the driving rank is measured on, and what each warm rebuild cost in
function (rebuild_error on held-out rows) in every iteration row."""

from __future__ import annotations

import math

import pytest

from rankprune.cli import _evolve_config, build_parser, main
from rankprune.config import ConfigError, RankConfig, RunConfig
from rankprune.models import FAMILIES
from rankprune.records import FORMAT_VERSION
from rankprune.runfolder import EPOCHS, ITERATIONS

DRIVE = "numerical:0.2"  # tiny_config's driving measure


def test_the_source_is_the_familys_default_unless_given_and_a_bad_one_is_refused():
    for name, family in FAMILIES.items():
        assert family.default_rank_source in ("weights", "activations")
        data = {"tasks": 4} if getattr(family, "reads_sequences", False) else {}  # a transformer reads tasks' sequences
        cfg = RunConfig().replace(model={"family": name}, data=data).validate().resolved()
        assert cfg.rank.source == family.default_rank_source
        assert RunConfig().replace(model={"family": name}, rank={"source": "activations"}).resolved().rank.source == "activations"
    with pytest.raises(ConfigError, match="rank source"):
        RankConfig(source="gradients").validate()


def test_the_flag_sets_it_and_a_bad_value_is_one_line(tmp_path, capsys):
    args = build_parser().parse_args(["evolve", "--dataset", "digits", "--rank-source", "activations"])
    assert _evolve_config(args).rank.source == "activations"
    out = tmp_path / "run"
    assert main(["evolve", "--dataset", "digits", "--layers", "1", "--rank-source", "gradients", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "rank source" in err and len(err.splitlines()) == 1 and not out.exists()


def test_a_config_from_before_format_4_keeps_the_weights():
    stored = RunConfig().replace(model={"family": "cnn"}).to_dict()
    del stored["rank"]["source"]
    stored["format_version"] = 3
    assert RunConfig.from_stored(stored).rank.source == "weights"
    assert FORMAT_VERSION >= 4


def test_activations_drive_the_widths_and_saturation_every_epoch(tmp_path, tiny_config, run_controller):
    cfg = tiny_config(rank={"source": "activations"}, evolve={"layers": (2,), "max_iterations": 2},
                      train={"saturate": "both", "max_epochs": 4})
    run = run_controller(cfg, tmp_path / "run")
    rows, epochs = run.rows(ITERATIONS), run.rows(EPOCHS)
    for r in rows:
        assert r["ranks_source"] == "activations"
        assert r["ranks"] == r[f"heldout_activation_rank_{DRIVE}"] and len(r["ranks"]) == 2
        if r["phase"] == "shrink" and r["train_stop"] != "diverged":
            assert r["next_widths"] == [max(1, min(w, math.ceil(k))) for w, k in zip(r["widths"], r["ranks"])]
    # measured after every epoch (what --saturate both watched), and the iteration's value is its last epoch's
    for r in rows:
        mine = [e for e in epochs if e["iteration"] == r["iteration"]]
        assert all(len(e[f"heldout_activation_rank_{DRIVE}"]) == 2 for e in mine)
        assert mine[-1][f"heldout_activation_rank_{DRIVE}"] == r[f"heldout_activation_rank_{DRIVE}"]


def test_every_iteration_records_what_its_warm_rebuild_cost(tmp_path, tiny_config, run_controller):
    """rebuild_error per hidden layer and rebuild_output_error where a warm rebuild made the network, None otherwise;
    held-out activation ranks in every row, whatever the source; no output scaling, so output_recentred is None."""
    run = run_controller(tiny_config(evolve={"layers": (2,), "max_iterations": 3, "width_tol": 0.0}), tmp_path / "warm")
    rows = run.rows(ITERATIONS)
    assert any(r["iteration"] > 0 and r["phase"] == "shrink" for r in rows)
    for r in rows:
        assert r["ranks_source"] == "weights" and len(r[f"heldout_activation_rank_{DRIVE}"]) == 2
        assert r["output_recentred"] is None
        if r["iteration"] > 0 and r["phase"] == "shrink":
            assert len(r["rebuild_error"]) == 2 and all(0 <= e < 1 for e in r["rebuild_error"])
            assert 0 <= r["rebuild_output_error"] < 1
        else:
            assert r["rebuild_error"] is None and r["rebuild_output_error"] is None
    assert all(f"heldout_activation_rank_{DRIVE}" not in e for e in run.rows(EPOCHS))  # weights: not per epoch
    reinit = run_controller(tiny_config(evolve={"layers": (1,), "max_iterations": 2, "rebuild": "reinit"}), tmp_path / "reinit")
    assert all(r["rebuild_error"] is None and r["rebuild_output_error"] is None for r in reinit.rows(ITERATIONS))
    # the report's section: a table and a figure where warm rebuilds were measured, nothing for reinit
    from rankprune.report.document import _Document
    from rankprune.report.gather import read_run
    from rankprune.report.rebuild import rebuild_cost
    from rankprune.report.run import SECTIONS

    assert rebuild_cost in SECTIONS
    for folder, shown in ((run, True), (reinit, False)):
        doc = _Document(tmp_path / f"report-{folder.path.name}")
        rebuild_cost(doc, read_run(folder))
        text = "\n".join(doc.lines)
        assert ("## What each warm rebuild cost in function" in text) == shown
        assert ("figures/rebuild-error.png" in text and "| [" in text) == shown and "Figure not drawn" not in text
