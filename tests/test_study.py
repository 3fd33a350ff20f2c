"""Optuna studies in-process: the study file, sampling an architecture, the objective and what a trial
records, failed trials, storage, and reproducibility of the sampled sequence.

Every study here is a tiny one on scikit-learn's digits (widths <= 32, depth 1-2, 2 epochs): a trial
takes well under a second, most of it SQLite commits.
"""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path

import optuna
import pytest

from rankprune.classes import trials_frame
from rankprune.config import ConfigError, RunConfig
from rankprune.models import parameter_count
from rankprune.rank import DEFAULT_RECORDED
from rankprune.runfolder import CONFIG, ITERATIONS, STATUS, RunFolder
from rankprune.study import (
    trial_folder,
    METRICS, TrialFailed, default_storage, load_study, make_sampler, open_storage, parse_spec, run_study,
    sample_trial, trial_attributes,
)

STUDIES = Path(__file__).resolve().parents[1] / "studies"
DIGITS_IN, DIGITS_OUT = 64, 10  # 8x8 images, 10 classes
MAX_EPOCHS = 2

# What every finished trial must record (the list, plus what the classes need).
REQUIRED_ATTRS = {
    "initial_widths", "widths", "depth", "rank_measure", "ranks", "layer_ranks",
    "network_rank_sum", "network_rank_normalized", "network_rank_min", "rank_parameters", "parameters",
    "train_acc", "val_acc", "test_acc", "train_loss", "test_loss", "generalisation_gap",
    "epochs", "iterations", "stop_reason", "cumulative_seconds", "cumulative_flops", "run_folder",
}

SPACE = """\
depth = { low = 1, high = 2 }
width = { low = 8, high = 32 }
width_profile = { choices = ["constant", "funnel"] }
"train.lr" = { low = 0.02, high = 0.1, log = true }
"""


def write_study(path: Path, *, name: str = "tiny", mode: str = "survey", sampler: str = "random", seed: int = 0,
                n_trials: int = 4, study_extra: str = "", space: str = SPACE, base_extra: str = "") -> Path:
    """A tiny study file on digits; `study_extra` lines go into [study], `base_extra` tables after [base.*]."""
    path.write_text(textwrap.dedent(f"""\
        [study]
        name = "{name}"
        mode = "{mode}"
        sampler = "{sampler}"
        seed = {seed}
        n_trials = {n_trials}
        """) + study_extra + textwrap.dedent(f"""
        [base.data]
        dataset = "digits"

        [base.train]
        max_epochs = {MAX_EPOCHS}
        patience = 2
        lr_drops = 0

        [base.rank]
        measure = "numerical:0.2"

        [base.evolve]
        max_iterations = 3
        max_drop = 1.0
        width_tol = 0.0
        """) + base_extra + "\n[space]\n" + space)
    return path


def spec_from(tmp_path: Path, text: str):
    path = tmp_path / "study.toml"
    path.write_text(textwrap.dedent(text))
    return parse_spec(path)


def sqlite(tmp_path: Path, name: str = "studies") -> str:
    return f"sqlite:///{tmp_path / name}.sqlite3"


# --- the study file -----------------------------------------------------------------------------------
@pytest.mark.parametrize("path", sorted(STUDIES.glob("*.toml")), ids=lambda p: p.stem)
def test_shipped_study_files_parse(path):
    spec = parse_spec(path)
    assert spec.name == path.stem
    assert spec.mode in ("survey", "evolve")
    assert all(o.metric in METRICS for o in spec.objectives)
    assert "depth" in spec.space
    assert isinstance(make_sampler(spec, spec.seed), optuna.samplers.BaseSampler)


# The objective metrics measured on the test split (study.TEST_METRICS, written out: the gap is training minus test
# accuracy), which the test set would then steer.
TEST_SPLIT = {"test_acc", "test_loss", "generalisation_gap"}


@pytest.mark.parametrize("path", sorted(STUDIES.glob("*.toml")), ids=lambda p: p.stem)
def test_shipped_studies_select_on_validation_never_on_test(path):
    """TPE and NSGA-II steer by the objectives and the Pareto front is ranked on them: the test split is only
    reported."""
    metrics = {o.metric for o in parse_spec(path).objectives}
    assert "val_acc" in metrics and not metrics & TEST_SPLIT


def test_an_objective_on_the_test_split_has_a_one_line_warning_and_no_other_does():
    from rankprune.study import TEST_METRICS, test_objective_warning

    assert set(TEST_METRICS) == TEST_SPLIT
    for metric in TEST_SPLIT:
        warning = test_objective_warning([metric, "network_rank_sum"])
        assert metric in warning and "test split" in warning and "val_acc" in warning and "\n" not in warning
    assert test_objective_warning([m for m in METRICS if m not in TEST_SPLIT]) is None


def test_a_study_file_with_defaults(tmp_path):
    spec = spec_from(tmp_path, """\
        [study]
        name = "smallest"

        [space]
        depth = 2
        """)
    assert (spec.name, spec.mode, spec.sampler, spec.seed, spec.n_trials) == ("smallest", "survey", "tpe", 0, 10)
    # selection on validation: the test split is only reported (README), so the default objective never names it
    assert [(o.metric, o.direction) for o in spec.objectives] == [("val_acc", "maximize")]
    assert (spec.heartbeat_interval, spec.grace_period) == (60, 180)


# (file text, what the one-line message must name). S: the smallest [study] table a study file needs.
S = '[study]\nname = "x"\n'
BAD_FILES = {
    "malformed-toml": ('[study\nname = "x"\n', "malformed TOML"),
    "unknown-table": ('[studdy]\nname = "x"\n[space]\ndepth = 1\n', "unknown table [studdy]"),
    "unknown-study-key": (S + 'sampeler = "tpe"\n[space]\ndepth = 1\n', "study.sampeler"),
    "unknown-storage-key": (S + "[storage]\nheartbeat = 1\n[space]\ndepth = 1\n", "storage.heartbeat"),
    "unknown-mode": (S + 'mode = "sweep"\n[space]\ndepth = 1\n', "unknown mode 'sweep'"),
    "bad-name": ('[study]\nname = "my study"\n[space]\ndepth = 1\n', "study name 'my study'"),
    "unknown-parameter": (S + '[space]\ndepth = 1\n"train.lrr" = 0.1\n', "space.train.lrr"),
    "unknown-top-parameter": (S + "[space]\ndepth = 1\nbogus = 1\n", "space.bogus"),
    "section-as-parameter": (S + "[space]\ndepth = 1\ntrain = 1\n", "space.train"),
    "unknown-section": (S + '[space]\ndepth = 1\n"optim.lr" = 0.1\n', "space.optim.lr"),
    "no-depth": (S + "[space]\nwidth = 8\n", "space.depth is required"),
    "unknown-profile": (S + '[space]\ndepth = 1\nwidth_profile = "zigzag"\n', "unknown width_profile 'zigzag'"),
    "unknown-profile-choice": (S + '[space]\ndepth = 1\nwidth_profile = { choices = ["constant", "zigzag"] }\n', "'zigzag'"),
    "low-above-high": (S + "[space]\ndepth = 1\nwidth = { low = 64, high = 8 }\n", "space.width has low > high"),
    "log-from-zero": (S + '[space]\ndepth = 1\n"train.lr" = { low = 0.0, high = 0.1, log = true }\n', "log-scaled"),
    "empty-choices": (S + "[space]\ndepth = 1\nwidth = { choices = [] }\n", "space.width needs a non-empty list"),
    "odd-distribution": (S + "[space]\ndepth = 1\nwidth = { low = 8, high = 16, scale = 2 }\n", "space.width must be"),
    "text-bounds": (S + '[space]\ndepth = 1\nwidth = { low = "a", high = 16 }\n', "low and high must be numbers"),
    "unknown-metric": (S + 'objectives = [{ metric = "accuracy", direction = "maximize" }]\n[space]\ndepth = 1\n',
                       "unknown objective metric 'accuracy'"),
    "bad-direction": (S + 'objectives = [{ metric = "test_acc", direction = "up" }]\n[space]\ndepth = 1\n',
                      "direction must be maximize or minimize"),
    "objective-shape": (S + 'objectives = [{ metric = "test_acc" }]\n[space]\ndepth = 1\n', "each objective is"),
    "no-objective": (S + "objectives = []\n[space]\ndepth = 1\n", "at least one objective"),
    "unknown-sampler": (S + 'sampler = "annealing"\n[space]\ndepth = 1\n', "unknown sampler 'annealing'"),
    "bad-sampler-option": (S + 'sampler = "tpe"\nsampler_options = { n_startup = 2 }\n[space]\ndepth = 1\n',
                           "sampler TPESampler"),
    "grid-continuous": (S + 'sampler = "grid"\n[space]\ndepth = 1\n"train.lr" = { low = 0.01, high = 0.1 }\n',
                        "space.train.lr is continuous"),
    "grid-independent": (S + 'sampler = "grid"\n[space]\ndepth = 2\nwidth_profile = "independent"\n',
                         "independent width profile"),
    "bad-base-value": (S + "[base.train]\nlr = -1.0\n[space]\ndepth = 1\n", "learning rate"),
    "unknown-base-key": (S + "[base.train]\nlrr = 0.1\n[space]\ndepth = 1\n", "train.lrr"),
    # issue 18: the whole file is checked before anything is created
    "no-study-table": ("[space]\ndepth = 1\n", "no [study] table; a study file needs [study] with name"),
    "no-study-name": ('[study]\nmode = "survey"\n[space]\ndepth = 1\n', "[study] needs name"),
    "empty-study-name": ('[study]\nname = ""\n[space]\ndepth = 1\n', "study.name is empty"),
    "negative-seed": (S + "seed = -1\n[space]\ndepth = 1\n", "study.seed must be an integer from 0 to 4294967295"),
    "huge-seed": (S + "seed = 4294967296\n[space]\ndepth = 1\n", "study.seed must be an integer from 0"),
    "zero-depth": (S + "[space]\ndepth = 0\n", "space.depth must be at least 1, got 0"),
    "zero-depth-choice": (S + "[space]\ndepth = { choices = [2, 0] }\n", "space.depth must be at least 1, got 0"),
    "zero-width-bound": (S + "[space]\ndepth = 1\nwidth = { low = 0, high = 8 }\n", "space.width must be at least 1, got 0"),
    "text-width": (S + '[space]\ndepth = 1\nwidth = "wide"\n', "space.width must be a whole number"),
    "fractional-depth": (S + "[space]\ndepth = { low = 1.0, high = 3.0 }\n", "space.depth must be a whole number"),
    "funnel-to-zero": (S + '[space]\ndepth = 10\nwidth = 256\nwidth_profile = "funnel"\n',
                       "a funnel of depth 10 from width 256 halves to 0 units"),
    "funnel-to-zero-at-a-corner": (
        S + '[space]\ndepth = { low = 1, high = 4 }\nwidth = { choices = [4, 64] }\n'
            'width_profile = { choices = ["constant", "funnel"] }\n',
        "a funnel of depth 4 from width 4 halves to 0 units [4, 2, 1, 0]; keep depth at most 3 or width at least 8"),
    "funnel-to-zero-from-the-base-width": (S + '[base.model]\nwidth = 2\n[space]\ndepth = 3\nwidth_profile = "funnel"\n',
                                           "a funnel of depth 3 from width 2"),
    "text-value": (S + '[space]\ndepth = 1\n"train.lr" = "fast"\n', "space.train.lr = 'fast' makes an invalid run: train.lr must be a number"),
    "bad-fixed-value": (S + '[space]\ndepth = 1\n"train.momentum" = 1.5\n', "space.train.momentum = 1.5 makes an invalid run"),
    "bad-range-end": (S + '[space]\ndepth = 1\n"train.lr" = { low = -0.1, high = 0.1 }\n', "space.train.lr = -0.1"),
    "bad-choice": (S + '[space]\ndepth = 1\n"rank.measure" = { choices = ["effective", "volume"] }\n', "space.rank.measure = 'volume'"),
    "bad-seed-end": (S + "[space]\ndepth = 1\nseed = { low = -5, high = 5 }\n", "space.seed = -5"),
    "log-and-step": (S + '[space]\ndepth = 1\n"train.lr" = { low = 0.01, high = 0.1, log = true, step = 0.01 }\n', "both log and step"),
    "zero-step": (S + "[space]\ndepth = 1\nwidth = { low = 8, high = 16, step = 0 }\n", "step must be a positive number"),
}


@pytest.mark.parametrize("text, names", BAD_FILES.values(), ids=BAD_FILES.keys())
def test_a_bad_study_file_is_one_line_naming_the_problem(tmp_path, text, names):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        parse_spec(path)
    message = str(info.value)
    assert names in message
    assert "\n" not in message


# Values of the wrong type pass the key checks and then escape as a raw ValueError / TypeError /
# AttributeError: a traceback and exit status 1 from the CLI instead of a one-line error and 2.
WRONG_TYPES = {
    "seed-text": S + 'seed = "abc"\n[space]\ndepth = 1\n',
    "n-trials-text": S + 'n_trials = "x"\n[space]\ndepth = 1\n',
    "sampler-number": S + "sampler = 3\n[space]\ndepth = 1\n",
    "sampler-options-number": S + "sampler_options = 3\n[space]\ndepth = 1\n",
    "name-number": "[study]\nname = 3\n[space]\ndepth = 1\n",
    "heartbeat-text": S + '[storage]\nheartbeat_interval = "x"\n[space]\ndepth = 1\n',
    "space-not-a-table": "space = 3\n" + S,
    "base-not-a-table": "base = [1]\n" + S + "[space]\ndepth = 1\n",
}


@pytest.mark.parametrize("text", WRONG_TYPES.values(), ids=WRONG_TYPES.keys())
def test_a_value_of_the_wrong_type_is_a_config_error(tmp_path, text):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        parse_spec(path)
    assert "no [study] table" not in str(info.value)  # the wrong value, not a missing table, is what is named


# --- sampling an architecture ---------------------------------------------------------------------------
PROFILE_SPACE = """\
    [base.evolve]
    max_iterations = 5

    [space]
    depth = { low = 1, high = 4 }
    width = { low = 8, high = 64 }
    width_profile = { choices = ["constant", "funnel", "expand", "independent"] }
    "train.lr" = { low = 0.01, high = 0.1, log = true }
    "rank.measure" = { choices = ["numerical:0.1", "effective"] }
    seed = { low = 0, high = 100 }
    """


@pytest.mark.parametrize("params, widths", [
    ({"depth": 3, "width": 32, "width_profile": "constant"}, [32, 32, 32]),
    ({"depth": 3, "width": 32, "width_profile": "funnel"}, [32, 16, 8]),
    ({"depth": 3, "width": 8, "width_profile": "expand"}, [8, 16, 32]),
    ({"depth": 3, "width": 9, "width_profile": "independent", "width_0": 20, "width_1": 9, "width_2": 64}, [20, 9, 64]),
    ({"depth": 1, "width": 9, "width_profile": "funnel"}, [9]),
])
def test_sample_trial_builds_the_profile(tmp_path, params, widths):
    spec = spec_from(tmp_path, "[study]\nname = \"p\"\nmode = \"evolve\"\n" + textwrap.dedent(PROFILE_SPACE))
    fixed = {"train.lr": 0.07, "rank.measure": "effective", "seed": 42, **params}
    cfg, got = sample_trial(optuna.trial.FixedTrial(fixed), spec)
    assert got == widths
    assert cfg.evolve.layers == (params["depth"],)
    assert cfg.evolve.max_iterations == 5  # evolve mode keeps the file's controller settings
    assert (cfg.train.lr, cfg.rank.measure, cfg.seed) == (0.07, "effective", 42)


def test_survey_mode_trains_once(tmp_path):
    spec = spec_from(tmp_path, "[study]\nname = \"p\"\nmode = \"survey\"\n" + textwrap.dedent(PROFILE_SPACE))
    fixed = {"depth": 2, "width": 16, "width_profile": "constant", "train.lr": 0.05, "rank.measure": "effective", "seed": 1}
    cfg, widths = sample_trial(optuna.trial.FixedTrial(fixed), spec)
    assert widths == [16, 16]
    assert cfg.evolve.max_iterations == 1 and cfg.evolve.layers == (2,)


def test_a_funnel_that_reaches_zero_width_is_an_invalid_trial(tmp_path):
    # parse_spec refuses a space that holds such a funnel; a trial can still get one from outside the space
    # (a retry enqueued under an older file), and fails alone
    spec = spec_from(tmp_path, '[study]\nname = "p"\n' + textwrap.dedent(PROFILE_SPACE))
    fixed = {"depth": 4, "width": 4, "width_profile": "funnel", "train.lr": 0.05, "rank.measure": "effective", "seed": 1}
    with pytest.raises(TrialFailed, match=r"invalid architecture: depth 4, widths \[4, 2, 1, 0\]"), \
            pytest.warns(UserWarning, match="out of the range"):
        sample_trial(optuna.trial.FixedTrial(fixed), spec)


def test_an_invalid_sampled_configuration_is_an_invalid_trial(tmp_path):
    # parse_spec refuses a choice that makes an invalid run; one from outside the space fails its trial alone
    spec = spec_from(tmp_path, """\
        [study]
        name = "m"
        [space]
        depth = 1
        width = 8
        "train.momentum" = { low = 0.5, high = 0.9 }
        """)
    with pytest.raises(TrialFailed, match="invalid configuration: momentum"), pytest.warns(UserWarning, match="out of the range"):
        sample_trial(optuna.trial.FixedTrial({"train.momentum": 1.5}), spec)
    cfg, _ = sample_trial(optuna.trial.FixedTrial({"train.momentum": 0.9}), spec)
    assert cfg.train.momentum == 0.9


def test_without_a_sampled_width_the_base_width_is_used(tmp_path):
    spec = spec_from(tmp_path, """\
        [study]
        name = "b"

        [base.model]
        width = 16

        [space]
        depth = 2
        """)
    _cfg, widths = sample_trial(optuna.trial.FixedTrial({}), spec)
    assert widths == [16, 16]


# --- samplers and storage -------------------------------------------------------------------------------
@pytest.mark.parametrize("name, cls", [
    ("random", optuna.samplers.RandomSampler), ("tpe", optuna.samplers.TPESampler), ("TPE", optuna.samplers.TPESampler),
    ("RandomSampler", optuna.samplers.RandomSampler), ("nsga2", optuna.samplers.NSGAIISampler),
    ("grid", optuna.samplers.GridSampler),
])
def test_make_sampler_by_alias_or_class_name(tmp_path, name, cls):
    spec = spec_from(tmp_path, f"""\
        [study]
        name = "s"
        sampler = "{name}"
        [space]
        depth = {{ low = 1, high = 2 }}
        width = {{ choices = [8, 16] }}
        """)
    assert isinstance(make_sampler(spec, 0), cls)  # the grid: a subclass that lets retries finish (study._GridWithRetries)


def test_default_storage_is_sqlite_in_the_root(tmp_path):
    assert default_storage(tmp_path) == f"sqlite:///{tmp_path}/studies.sqlite3"
    storage = open_storage(default_storage(tmp_path / "new" / "root"))  # creates the folder
    assert isinstance(storage, optuna.storages.RDBStorage)
    assert (tmp_path / "new" / "root").is_dir()


@pytest.mark.parametrize("url", ["notadb://host/db", "not a url", "postgresql+psycopg2://alice:s3cret@127.0.0.1:1/db"])
def test_a_bad_storage_url_is_one_line(url):
    with pytest.raises(ConfigError) as info:
        open_storage(url)
    message = str(info.value)
    assert message.startswith("cannot open storage") and "\n" not in message
    assert "s3cret" not in message  # a password in the URL is never printed


def test_a_sqlite_url_whose_folder_cannot_be_made_is_a_config_error(tmp_path):
    (tmp_path / "afile").write_text("")
    with pytest.raises(ConfigError, match="cannot open storage"):
        open_storage(f"sqlite:///{tmp_path}/afile/studies.sqlite3")


def test_load_study_names_the_studies_that_exist(tmp_path):
    url = sqlite(tmp_path)
    optuna.create_study(study_name="present", storage=url)
    with pytest.raises(ConfigError, match=r"no study 'absent' .* it has: present"):
        load_study("absent", url)
    assert load_study("present", url).study_name == "present"


# --- what a trial records ----------------------------------------------------------------------------------
def test_trial_attributes_derive_the_network_rank_forms():
    summary = {
        "ranks": [3.2, 5.0], "widths": [8, 6], "rank_measure": "effective",
        "layer_ranks": {"effective": [3.2, 5.0, 4.1]}, "parameters": 651,
        "train_acc": 0.9, "val_acc": 0.85, "test_acc": 0.8, "train_loss": 0.3, "test_loss": 0.5,
        "generalisation_gap": 0.1, "epochs": 7, "iterations": 2, "stop_reason": "fixed-point",
        "cumulative_seconds": 1.5, "cumulative_flops": 1e6, "initial_widths": [16, 16],
    }
    attrs = trial_attributes(summary, "mlp", (64,), 10, Path("/runs/trial-0003"))
    assert REQUIRED_ATTRS <= set(attrs)
    assert attrs["ranks"] == [4, 5]  # fractional ranks round up; 5.0 stays 5
    assert attrs["network_rank_sum"] == 9
    assert attrs["network_rank_normalized"] == pytest.approx(9 / 14)
    assert attrs["network_rank_min"] == 4
    assert attrs["rank_parameters"] == parameter_count(64, [4, 5], 10) == 64 * 4 + 4 + 4 * 5 + 5 + 5 * 10 + 10
    assert (attrs["depth"], attrs["initial_widths"], attrs["run_folder"]) == (2, [16, 16], "/runs/trial-0003")
    json.dumps(attrs)  # Optuna stores user attributes as JSON

    dead = trial_attributes({**summary, "ranks": [0.0, 2.0]}, "mlp", (64,), 10, Path("/x"))
    assert dead["network_rank_min"] == 0
    assert dead["rank_parameters"] == parameter_count(64, [1, 2], 10)  # a dead layer still passes one unit


def check_finished_trial(t: optuna.trial.FrozenTrial, root: Path, study_name: str, mode: str) -> None:
    a = t.user_attrs
    assert REQUIRED_ATTRS <= set(a), REQUIRED_ATTRS - set(a)
    depth = t.params["depth"]
    width, profile = t.params["width"], t.params["width_profile"]
    assert a["initial_widths"] == ([width] * depth if profile == "constant" else [width // 2**i for i in range(depth)])
    assert a["depth"] == depth == len(a["ranks"]) == len(a["widths"])
    assert all(1 <= r <= w for r, w in zip(a["ranks"], a["widths"]))
    if mode == "survey":
        assert a["widths"] == a["initial_widths"] and a["iterations"] == 1
        assert 1 <= a["epochs"] <= MAX_EPOCHS
    else:
        assert all(w <= w0 for w, w0 in zip(a["widths"], a["initial_widths"]))  # widths never grow
        assert 1 <= a["iterations"] <= 3
    # every recorded measure, for every layer including the output layer
    assert set(DEFAULT_RECORDED) | {a["rank_measure"]} <= set(a["layer_ranks"])
    assert all(len(v) == depth + 1 for v in a["layer_ranks"].values())
    assert a["ranks"] == [math.ceil(r - 1e-9) for r in a["layer_ranks"][a["rank_measure"]][:-1]]
    assert a["network_rank_sum"] == sum(a["ranks"])
    assert a["network_rank_normalized"] == pytest.approx(sum(a["ranks"]) / sum(a["widths"]))
    assert a["network_rank_min"] == min(a["ranks"])
    assert a["rank_parameters"] == parameter_count(DIGITS_IN, a["ranks"], DIGITS_OUT)
    assert a["parameters"] == parameter_count(DIGITS_IN, a["widths"], DIGITS_OUT)
    assert a["generalisation_gap"] == pytest.approx(a["train_acc"] - a["test_acc"])
    assert 0 <= a["test_acc"] <= 1 and a["train_loss"] > 0 and a["test_loss"] > 0
    assert a["cumulative_seconds"] > 0 and a["cumulative_flops"] > 0
    assert a["run_folder"] == f"studies/{study_name}/trial-{t.number:04d}"  # relative to the artifact root
    run = trial_folder(a["run_folder"], a["artifact_root"])
    assert run.resolve() == (root / "studies" / study_name / f"trial-{t.number:04d}").resolve()
    cfg = RunConfig.from_dict(json.loads((run / CONFIG).read_text()))
    assert cfg.evolve.layers == (depth,) and cfg.train.lr == t.params["train.lr"]
    assert json.loads((run / STATUS).read_text())["state"] == "finished"
    assert len(RunFolder(run).rows(ITERATIONS)) == a["iterations"]


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("survey")
    spec = parse_spec(write_study(tmp / "survey.toml", name="survey", n_trials=4, seed=3))
    study = run_study(spec, sqlite(tmp), tmp / "root", spec.n_trials)
    return study, tmp / "root"


def test_a_survey_study_records_every_trial(survey):
    study, root = survey
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 4
    for t in study.trials:
        check_finished_trial(t, root, "survey", "survey")
        assert t.value == t.user_attrs["val_acc"]  # the default objective: validation, never test
    assert study.user_attrs["mode"] == "survey"
    assert study.metric_names == ["val_acc"]


def test_trials_frame_of_a_real_study(survey):
    study, _root = survey
    df = trials_frame(study)
    assert df["number"].tolist() == [0, 1, 2, 3]
    assert {"param_depth", "param_width", "param_width_profile", "param_train.lr"} <= set(df.columns)
    assert REQUIRED_ATTRS <= set(df.columns)


def test_an_evolve_study_with_two_objectives(tmp_path):
    objectives = ('objectives = [{ metric = "val_acc", direction = "maximize" },'
                  ' { metric = "rank_parameters", direction = "minimize" }]\n')
    spec = parse_spec(write_study(tmp_path / "evolve.toml", name="evolve", mode="evolve", study_extra=objectives))
    study = run_study(spec, sqlite(tmp_path), tmp_path / "root", 2)
    assert study.directions == [optuna.study.StudyDirection.MAXIMIZE, optuna.study.StudyDirection.MINIMIZE]
    assert study.metric_names == ["val_acc", "rank_parameters"]
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    for t in study.trials:
        check_finished_trial(t, tmp_path / "root", "evolve", "evolve")
        assert t.values == [t.user_attrs["val_acc"], t.user_attrs["rank_parameters"]]


# --- failed trials ------------------------------------------------------------------------------------------
FAILING_SPACE = """\
depth = { low = 1, high = 2 }
width = { choices = [4, 16] }
width_profile = { choices = ["constant", "funnel"] }
"train.lr" = { choices = [0.05, 1000000.0] }
"""


def queued_study(tmp_path: Path, *queued: dict) -> tuple:
    """A study whose first trials take the given parameters (enqueued), then samples freely."""
    spec = parse_spec(write_study(tmp_path / "fail.toml", name="fail", space=FAILING_SPACE))
    url = sqlite(tmp_path)
    study = optuna.create_study(study_name="fail", storage=url, direction="maximize")
    for params in queued:
        study.enqueue_trial(params)
    return spec, url


def test_an_invalid_architecture_fails_its_trial_and_the_study_goes_on(tmp_path):
    spec, url = queued_study(
        tmp_path,
        {"depth": 4, "width": 4, "width_profile": "funnel", "train.lr": 0.05},  # widths [4, 2, 1, 0], outside the space
        {"depth": 1, "width": 16, "width_profile": "constant", "train.lr": 0.05},
    )
    study = run_study(spec, url, tmp_path / "root", 2)
    first, second = study.trials
    assert first.state == optuna.trial.TrialState.FAIL
    assert first.user_attrs["fail_reason"] == "invalid architecture: depth 4, widths [4, 2, 1, 0]"
    assert not (tmp_path / "root" / "studies" / "fail" / "trial-0000").exists()  # nothing was trained
    assert second.state == optuna.trial.TrialState.COMPLETE
    check_finished_trial(second, tmp_path / "root", "fail", "survey")


def test_a_diverging_trial_fails_with_its_reason_and_the_study_goes_on(tmp_path):
    spec, url = queued_study(
        tmp_path,
        {"depth": 1, "width": 16, "width_profile": "constant", "train.lr": 1e6},  # the loss becomes NaN
        {"depth": 1, "width": 16, "width_profile": "constant", "train.lr": 0.05},
    )
    study = run_study(spec, url, tmp_path / "root", 2)
    first, second = study.trials
    assert first.state == optuna.trial.TrialState.FAIL
    assert "diverged" in first.user_attrs["fail_reason"]
    assert second.state == optuna.trial.TrialState.COMPLETE


# --- reproducibility --------------------------------------------------------------------------------------
@pytest.mark.parametrize("sampler, options", [
    ("random", ""),
    # two random start-up trials, then two from TPE's model of the first trials' accuracies: the
    # sequence repeats only if training repeats too
    ("tpe", "sampler_options = { n_startup_trials = 2 }\n"),
], ids=["random", "tpe"])
def test_same_seed_same_sampled_sequence_other_seed_other_sequence(tmp_path, sampler, options):
    spec = parse_spec(write_study(tmp_path / "s.toml", name="repro", sampler=sampler, seed=7, study_extra=options))

    def sequence(storage: str, n: int, seed: int | None = None) -> tuple[list[dict], list[float]]:
        study = run_study(spec, sqlite(tmp_path, storage), tmp_path / storage, n, seed=seed)
        assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
        return [t.params for t in study.trials], [t.value for t in study.trials]

    params_a, values_a = sequence("a", 4)
    params_b, values_b = sequence("b", 4)
    assert params_a == params_b
    assert values_a == values_b
    params_c, _ = sequence("c", 2, seed=8)
    assert params_c != params_a[:2]
    assert all(c != a for c, a in zip(params_c, params_a))


# --- task-complexity knobs in a study's [space] ----------------------------------------------------------
KNOB_SPACE = """\
depth = 1
width = 16
"data.label_noise" = { choices = [0.0, 0.25] }
"data.classes" = { choices = [3, 10] }
"data.tasks" = { choices = [1, 2] }
"data.train_fraction" = { choices = [0.5, 1.0] }
"train.loss" = { choices = ["cross-entropy", "hinge"] }
"train.saturate" = { choices = ["accuracy", "both"] }
"""


def test_the_task_knobs_are_searchable_in_a_study_space(tmp_path):
    """Each knob sampled in [space] reaches the trial's run: its config, its data and its recorded columns."""
    spec = parse_spec(write_study(tmp_path / "knobs.toml", name="knobs", mode="evolve", space=KNOB_SPACE, n_trials=2))
    url = sqlite(tmp_path)
    study = optuna.create_study(study_name="knobs", storage=url, direction="maximize")
    one = {"data.label_noise": 0.25, "data.classes": 3, "data.tasks": 2, "data.train_fraction": 0.5,
           "train.loss": "hinge", "train.saturate": "both"}
    other = {"data.label_noise": 0.0, "data.classes": 10, "data.tasks": 1, "data.train_fraction": 1.0,
             "train.loss": "cross-entropy", "train.saturate": "accuracy"}
    study.enqueue_trial(one)
    study.enqueue_trial(other)
    study = run_study(spec, url, tmp_path / "root", 2)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    for t, params in zip(study.trials, (one, other)):
        run = trial_folder(t.user_attrs["run_folder"], t.user_attrs["artifact_root"])
        cfg = RunConfig.from_dict(json.loads((run / CONFIG).read_text()))
        assert (cfg.data.label_noise, cfg.data.classes or 10, cfg.data.tasks or 1, cfg.data.train_fraction,
                cfg.train.loss, cfg.train.saturate) == tuple(params.values())
        data = json.loads((run / "data.json").read_text())
        assert data["n_classes"] == params["data.classes"]
        assert ("label_noise" in data) == (params["data.label_noise"] > 0)
        rows = RunFolder(run).rows(ITERATIONS)
        assert all(("n_delta" in r) == (params["train.loss"] == "hinge") for r in rows)
        assert data["tasks"] == params["data.tasks"]  # set, even to 1: unseen tasks are measured then too
        assert all(r["test_acc_unseen_tasks"] is not None for r in rows)
        assert all(("train_acc_relabelled" in r) == (params["data.label_noise"] > 0) for r in rows)


def test_widths_spelled_out_set_every_layer_and_the_depth(tmp_path):
    """LeNet-300-100, or random architectures drawn once and replicated over seeds: space.widths names every layer."""
    spec = spec_from(tmp_path, """\
        [study]
        name = "w"
        mode = "evolve"
        [space]
        widths = { choices = ["300-100", "64-32-16"] }
        "train.lr" = 0.07
        """)
    cfg, widths = sample_trial(optuna.trial.FixedTrial({"widths": "64-32-16"}), spec)
    assert widths == [64, 32, 16] and cfg.evolve.layers == (3,) and cfg.train.lr == 0.07
    cfg, widths = sample_trial(optuna.trial.FixedTrial({"widths": "300-100"}), spec)
    assert widths == [300, 100] and cfg.evolve.layers == (2,)


@pytest.mark.parametrize("space, message", [
    ('widths = "300-0"', r"widths must be whole numbers of at least 1 joined by '-'"),
    ('widths = "300-x"', r"widths must be whole numbers"),
    ('widths = "300-100"\nwidth = 64', r"space.widths sets every hidden layer's width; drop width"),
    ('widths = "300-100"\nwidth_profile = "funnel"', r"drop width_profile"),
    ('widths = "300-100"\ndepth = 3', r"has 2 layers but space.depth is 3"),
])
def test_bad_widths_are_one_line_errors(tmp_path, space, message):
    with pytest.raises(ConfigError, match=message):
        spec_from(tmp_path, f'[study]\nname = "w"\n[space]\n{space}\n')
