"""`rankprune dynamics lazy | report` and `--shard` end to end: folders, reports, shards that share a folder."""

from __future__ import annotations

import json

from rankprune.cli import main

JAMMING = ["dynamics", "jamming", "--dataset", "digits", "--points", "200", "--depths", "2", "--params", "60,150,400",
           "--seeds", "0", "--steps", "20", "--checkpoints", "4", "--hessian-max", "0"]


def _names(folder):
    return sorted(p.name for p in (folder / "units").glob("*.json"))


def test_two_shards_share_one_folder_and_the_last_one_draws_the_report(tmp_path, capsys):
    out = tmp_path / "jam"
    assert main(JAMMING + ["--out", str(out), "--shard", "1/2"]) == 0
    first = _names(out)
    assert first == ["jamming-L2-N400-seed0.json", "jamming-L2-N60-seed0.json"]  # units 0 and 2 of 3
    assert not (out / "report.md").exists() and "the report waits" in capsys.readouterr().err
    assert main(JAMMING + ["--out", str(out), "--shard", "2/2"]) == 0
    assert _names(out) == sorted(first + ["jamming-L2-N150-seed0.json"]) and (out / "report.md").is_file()


def test_a_shard_out_of_range_is_refused(tmp_path, capsys):
    for bad in ("3/2", "0/2", "x"):
        try:
            status = main(JAMMING + ["--out", str(tmp_path / "j"), "--shard", bad])
        except SystemExit as exc:
            status = exc.code
        assert status == 2
    assert not (tmp_path / "j").exists()


def test_lazy_runs_its_networks_into_a_folder_and_reports_them(tmp_path):
    out = tmp_path / "alpha"
    args = ["dynamics", "lazy", "alpha", "--steps", "20", "--checkpoints", "4", "--seeds", "0,1", "--out", str(out)]
    assert main(args) == 0
    names = _names(out)
    assert len(names) == 8 and "alpha-a1000-seed1.json" in names
    unit = json.loads((out / "units" / "alpha-a1000-seed1.json").read_text())
    assert unit["lr"] == 0.01 / 1000 ** 2 and [r["step"] for r in unit["rows"]][0] == 0
    report = (out / "report.md").read_text()
    assert "output scaling" in report and "Movement exponent" in report
    assert (out / "figures" / "lazy-alpha-exponent.png").is_file()
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "units").glob("*.json")}
    assert main(args) == 0  # again: nothing retrained
    assert stamps == {p.name: p.stat().st_mtime_ns for p in (out / "units").glob("*.json")}


def test_the_landscape_needs_no_training_and_report_draws_a_folder_again(tmp_path, capsys):
    out = tmp_path / "land"
    assert main(["dynamics", "lazy", "landscape", "--out", str(out)]) == 0
    assert (out / "figures" / "lazy-landscape.png").is_file() and not _names(out)
    (out / "report.md").unlink()
    assert main(["dynamics", "report", str(out)]) == 0 and "scaled one-parameter model" in (out / "report.md").read_text()
    capsys.readouterr()
    assert main(["dynamics", "report", str(tmp_path)]) == 2  # not an experiment folder
    err = capsys.readouterr().err.strip()
    assert "not a dynamics experiment folder" in err and "\n" not in err
