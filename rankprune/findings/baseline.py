"""A suite's baselines: another controller run on the (depth, seed) pairs of one of its studies, on the same data,
under a budget of training FLOPs taken from that study's runs, so that accuracy can be set against cost (question 3).

    [[baseline]]    name, question, study (the study name of one of the suite's experiments), budget,
                    fallback_flops (optional), width (784), cost (optional)

The one baseline so far is the original notebook's controller (baselines/original.py, starting at `width` units
per hidden layer). It runs once per (depth, seed) of its study's grid, on the data of the study's [base] (so
`findings run --data-dir` and `--no-download` apply) split with that seed, as the study's trials are. Its budget:

    budget = "warm"      the cumulative_flops (every iteration's training) of the study's COMPLETE trial at the same
                         depth and seed whose evolve.rebuild is "warm" (any value evolve.rebuild takes in the study);
                         where there is none yet, fallback_flops, or without it that pair waits for its study
    budget = 2.0e12      a fixed number of training FLOPs for every pair

Each pair's result is one JSON file, ROOT/baselines/NAME/depth-D-seed-S.json (result_path), written atomically (a
temp file, then os.replace), so Ctrl-C or SIGTERM leaves no partial file. A pair is done when its file holds the
budget it would get now: a result run on the fallback, before the warm run it waited for finished, runs again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from rankprune.config import ConfigError, RunConfig
from rankprune.findings.entries import check_entry, check_name, check_question

if TYPE_CHECKING:
    from rankprune.findings.suite import Experiment

__all__ = ["Baseline", "Pair", "BASELINE_KEYS", "BASELINES_DIR", "check_baseline", "result_path", "plan",
           "run_baseline", "read_result", "upload_result", "artifact_key"]

BASELINE_KEYS = ("name", "question", "study", "budget", "fallback_flops", "width", "cost")
BASELINES_DIR = "baselines"  # under the runner's ROOT, beside studies/ and studies.sqlite3
METHOD = "the original notebook's loop (rankprune.baselines.original)"


@dataclass(frozen=True)
class Baseline:
    name: str
    question: int
    study: str  # the study name of the experiment whose (depth, seed) pairs, data and budgets it follows
    budget: str | float  # a value of the study's evolve.rebuild, or a fixed number of training FLOPs
    fallback_flops: float | None  # the budget where the run `budget` names is missing; None: such a pair waits
    width: int  # hidden units per layer of its first network
    cost: str | None
    depths: tuple[int, ...]
    seeds: tuple[int, ...]

    @property
    def pairs(self) -> list[tuple[int, int]]:
        """(depth, seed) of every run, depths outermost."""
        return [(d, s) for d in self.depths for s in self.seeds]

    def budget_rule(self) -> str:
        """The budget in words, for the report."""
        if not isinstance(self.budget, str):
            return f"a fixed {self.budget:.3g} training FLOPs per run"
        fallback = (f"; {self.fallback_flops:.3g} FLOPs where that run is missing" if self.fallback_flops is not None
                    else "; a pair whose run is missing waits for it")
        return (f"the training FLOPs of the `{self.study}` run with evolve.rebuild = {self.budget} at the same depth "
                f"and seed (every iteration it trained){fallback}")


@dataclass(frozen=True)
class Pair:
    depth: int
    seed: int
    budget_flops: float | None  # None: waiting for the run its budget comes from
    budget_source: str  # "trial 12 (evolve.rebuild = warm)", "fallback_flops", "fixed"; "" while waiting
    path: Path
    done: bool


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _depths(experiment: Experiment, where: str) -> tuple[int, ...]:
    from rankprune.study import _grid

    space = experiment.spec.space
    if "widths" in space:
        raise ConfigError(f"{where}: study {experiment.name!r} spells out its widths (space.widths); a baseline follows "
                          "a study whose space sets depth")
    grid = _grid(experiment.spec)
    depths = grid["depth"] if "depth" in grid else [space.get("depth")]
    if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in depths):
        raise ConfigError(f"{where}: study {experiment.name!r} has no whole depth in its space to follow, got {depths!r}")
    return tuple(depths)


def _rebuilds(experiment: Experiment) -> list[str]:
    """The values evolve.rebuild takes in the study: its grid's, else its [base]'s (or the default)."""
    from rankprune.study import _grid

    grid = _grid(experiment.spec)
    if "evolve.rebuild" in grid:
        return list(grid["evolve.rebuild"])
    return [RunConfig.from_dict(experiment.spec.base).evolve.rebuild]


def check_baseline(raw: Any, experiments: dict[str, Experiment], questions: dict[int, str], where: str) -> Baseline:
    """A suite file's [[baseline]] table, checked against the suite's experiments (by study name): a Baseline, or a
    one-line ConfigError naming `where` and the key."""
    check_entry(raw, where, " ([[baseline]])", BASELINE_KEYS, ("name", "question", "study", "budget"))
    name = check_name(raw["name"], where, "a folder")
    where = f"{where} ({name})"
    question = check_question(raw["question"], questions, where)
    study = raw["study"]
    if study not in experiments:
        raise ConfigError(f"{where}: study = {study!r} is no experiment of the suite; it has {', '.join(experiments)}")
    experiment = experiments[study]
    base = RunConfig.from_dict(experiment.spec.base)
    if base.model.family != "mlp":
        raise ConfigError(f"{where}: the original loop trains an MLP; study {study!r} trains the {base.model.family} family")
    budget = raw["budget"]
    rebuilds = _rebuilds(experiment)
    if isinstance(budget, str):
        if budget not in rebuilds:
            raise ConfigError(f"{where}: budget = {budget!r} is not a value of evolve.rebuild in study {study!r} "
                              f"({', '.join(rebuilds)}); give one, or a number of training FLOPs")
    elif not (_number(budget) and budget > 0):
        raise ConfigError(f"{where}: budget must be a value of evolve.rebuild in study {study!r} (e.g. \"warm\") or a "
                          f"positive number of training FLOPs, got {budget!r}")
    fallback = raw.get("fallback_flops")
    if fallback is not None and not (_number(fallback) and fallback > 0):
        raise ConfigError(f"{where}: fallback_flops must be a positive number of training FLOPs, got {fallback!r}")
    if fallback is not None and not isinstance(budget, str):
        raise ConfigError(f"{where}: fallback_flops goes with a budget taken from the study's runs, not a fixed budget")
    width = raw.get("width", 784)
    if not isinstance(width, int) or isinstance(width, bool) or width < 1:
        raise ConfigError(f"{where}: width must be a whole number of hidden units, at least 1, got {width!r}")
    cost = raw.get("cost")
    if cost is not None and not (isinstance(cost, str) and cost.strip()):
        raise ConfigError(f"{where}: cost must be a string, e.g. \"12 runs, about 10 minutes\"")
    return Baseline(name, question, study, budget if isinstance(budget, str) else float(budget),
                    None if fallback is None else float(fallback), width, cost, _depths(experiment, where),
                    experiment.seeds)


# --- budgets and results -----------------------------------------------------------------------------------------
def result_path(root: Path, name: str, depth: int, seed: int) -> Path:
    return Path(root) / BASELINES_DIR / name / f"depth-{depth}-seed-{seed}.json"


def read_result(path: Path) -> dict | None:
    """A pair's result file, or None where there is none (or it cannot be read as one)."""
    import json

    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return result if isinstance(result, dict) and "log" in result else None


def artifact_key(name: str, depth: int, seed: int) -> str:
    """The study user attribute holding the artifact id of a baseline pair's result file (upload_result)."""
    return f"baseline:{name}:depth-{depth}-seed-{seed}"


def upload_result(baseline: Baseline, experiment: Experiment, url: str, pair: Pair, artifacts: tuple[str, Any]) -> str:
    """A pair's result file into the artifact store (URL, store), attached to its study: its id under the study's
    user attribute artifact_key, which the findings report reads on a machine without the runner's root."""
    import optuna
    from optuna.artifacts import upload_artifact

    from rankprune.study import open_storage

    store_url, store = artifacts
    study = optuna.load_study(study_name=experiment.name, storage=open_storage(url))
    artifact_id = upload_artifact(artifact_store=store, file_path=str(pair.path), study_or_trial=study)
    study.set_user_attr(artifact_key(baseline.name, pair.depth, pair.seed), {"id": artifact_id, "store": store_url})
    return artifact_id


def _read_study(experiment: Experiment, url: str):
    """The experiment's study, opened read-only; None where the storage or the study does not exist yet."""
    from rankprune.study import _sqlite_path, load_study

    path = _sqlite_path(url)
    if path is not None and not path.is_file():
        return None
    try:
        return load_study(experiment.name, url, read_only=True)
    except ConfigError:  # no such study yet
        return None


def _uploaded(experiment: Experiment, url: str) -> dict[str, dict]:
    """The study's uploaded baseline results (upload_result): key -> {"id", "store"}; {} without a study."""
    study = _read_study(experiment, url)
    attrs = study.user_attrs if study is not None else {}
    return {k: v for k, v in attrs.items() if k.startswith("baseline:") and isinstance(v, dict)}


def _fetched(uploaded: dict[str, dict], key: str, name: str, fetcher) -> Path | None:
    """A pair's result file fetched from the artifact store it was uploaded to, or None where it was not (or cannot
    be fetched now: the report then says the pair is missing, as it says of one never run)."""
    from rankprune.artifacts import ArtifactUnavailable

    entry = uploaded.get(key)
    if fetcher is None or entry is None:
        return None
    try:
        return fetcher.fetch(str(entry.get("store")), str(entry.get("id")), name, folder=False)
    except ArtifactUnavailable:
        return None


def _runs(baseline: Baseline, experiment: Experiment, url: str) -> dict[tuple[int, int], tuple[float, int]]:
    """(depth, seed) -> (cumulative_flops, trial number) of the study's first COMPLETE trial at each pair whose
    evolve.rebuild is baseline.budget; {} where the storage or the study does not exist yet."""
    import optuna

    study = _read_study(experiment, url)
    if study is None:
        return {}
    default = _rebuilds(experiment)[0]
    out: dict[tuple[int, int], tuple[float, int]] = {}
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        depth = t.params.get("depth", t.user_attrs.get("depth"))
        key = (depth, t.params.get("seed"))
        if t.params.get("evolve.rebuild", default) == baseline.budget and key not in out \
                and t.user_attrs.get("cumulative_flops") is not None:
            out[key] = (float(t.user_attrs["cumulative_flops"]), t.number)
    return out


def plan(baseline: Baseline, experiment: Experiment, url: str, root: Path, fetcher=None) -> list[Pair]:
    """Every (depth, seed) of the baseline with its budget now and whether its result is done (read only). With a
    `fetcher` (artifacts.Fetcher: a reader), a result file not under `root` is fetched from the artifact store its
    runner uploaded it to, and the pair's path is the fetched copy."""
    runs = _runs(baseline, experiment, url) if isinstance(baseline.budget, str) else {}
    uploaded = _uploaded(experiment, url) if fetcher is not None else {}
    pairs = []
    for depth, seed in baseline.pairs:
        if not isinstance(baseline.budget, str):
            budget, source = baseline.budget, "fixed"
        elif (depth, seed) in runs:
            budget, number = runs[(depth, seed)]
            source = f"trial {number} (evolve.rebuild = {baseline.budget})"
        elif baseline.fallback_flops is not None:
            budget, source = baseline.fallback_flops, "fallback_flops"
        else:
            budget, source = None, ""
        path = result_path(root, baseline.name, depth, seed)
        if not path.is_file():
            path = _fetched(uploaded, artifact_key(baseline.name, depth, seed), path.name, fetcher) or path
        stored = read_result(path) if budget is not None else None
        pairs.append(Pair(depth, seed, budget, source, path, stored is not None and stored.get("budget_flops") == budget))
    return pairs


def run_pair(baseline: Baseline, experiment: Experiment, pair: Pair) -> dict:
    """Train the baseline for one pair and write its result file atomically; returns what it wrote."""
    from rankprune import data as data_mod
    from rankprune.baselines.original import train_original
    from rankprune.provenance import environment
    from rankprune.runfolder import write_json_atomic

    cfg = RunConfig.from_dict(experiment.spec.base).replace(seed=pair.seed).validate()
    try:
        data = data_mod.load(cfg.data, cfg.data_seed)
    except data_mod.DataError as exc:
        raise ConfigError(f"{experiment.file}: {exc}; give --data-dir DIR") from None
    result = train_original(data, pair.depth, pair.seed, pair.budget_flops, baseline.width, cfg.device)
    final = result.final
    out = {
        "baseline": baseline.name, "method": METHOD, "study": baseline.study, "depth": pair.depth, "seed": pair.seed,
        "width": baseline.width, "budget_flops": pair.budget_flops, "budget_source": pair.budget_source,
        "stop": result.stop, "meta_iterations": result.meta_iterations, "epochs": len(result.log),
        "initial_widths": result.log[0]["widths"], "widths": final["widths"], "test_acc": final["test_acc"],
        "cumulative_flops": final["cumulative_flops"], "cumulative_seconds": final["cumulative_seconds"],
        "decides_on": "test accuracy", "data": data.describe(), "environment": environment(cfg.device, pair.seed),
        "log": result.log,
    }
    write_json_atomic(pair.path, out)
    return out


def run_baseline(baseline: Baseline, experiment: Experiment, url: str, root: Path,
                 on_start: Callable[[list[Pair]], None] | None = None,
                 on_pair: Callable[[Pair, dict], None] | None = None,
                 artifacts: tuple[str, Any] | None = None) -> list[Pair]:
    """Run every pair of the baseline that is neither done nor waiting for its budget, one after another; returns
    the plan afterwards. `on_start(plan)` sees the plan first, `on_pair(pair, result)` each result as it is written.
    KeyboardInterrupt (Ctrl-C, SIGTERM) leaves the finished pairs' files and no other. With `artifacts` (URL, store),
    each result file is also uploaded to that artifact store (upload_result)."""
    pairs = plan(baseline, experiment, url, root)
    if on_start is not None:
        on_start(pairs)
    uploaded = _uploaded(experiment, url) if artifacts is not None else {}
    for pair in pairs:
        if pair.done and artifacts is not None and artifact_key(baseline.name, pair.depth, pair.seed) not in uploaded:
            upload_result(baseline, experiment, url, pair, artifacts)  # run before the store was named
        if pair.done or pair.budget_flops is None:
            continue
        result = run_pair(baseline, experiment, pair)
        if artifacts is not None:
            upload_result(baseline, experiment, url, pair, artifacts)
        if on_pair is not None:
            on_pair(pair, result)
    return plan(baseline, experiment, url, root)
