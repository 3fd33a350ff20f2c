"""A suite of findings: grid studies, the seeds each is replicated over, and the hypotheses each one tests.

A suite file (studies/findings/suite.toml) has these tables:

    [suite]         name, description
    [questions]     section titles of the report, by number: 1 = "Is the convergent rank ...?"
    [[experiment]]  file (a study file, relative to the suite file), question, seeds, cost (optional),
                    hypotheses (a list of inline tables, each with a kind: hypotheses.KINDS; none for a study
                    that only a law reads)
    [[law]]         name, question, y, knobs = [{ param, transform }], fit and held_out (study names of the
                    experiments), tolerance (0.15): a law of y on the knobs, tested on settings it did not see (law.py)
    [[baseline]]    name, question, study (an experiment's study name), budget ("warm": that study's warm run's
                    training FLOPs at the same depth and seed; or a number of FLOPs), fallback_flops, width (784),
                    cost: the original notebook's loop on the study's (depth, seed) pairs and data (baseline.py)

Every study of a suite uses the grid sampler, so what it declares is exact: its grid's cells, the seeds
included (the suite injects them as space.seed = {choices = seeds}, and into nothing else). parse_suite
checks all of it before any study is touched; each problem is a one-line ConfigError naming the file and key.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rankprune.config import MAX_SEED, ConfigError, load_toml
from rankprune.findings.entries import check_entry, check_question
from rankprune.findings.hypotheses import Hypothesis, check_hypothesis
from rankprune.findings.baseline import Baseline, check_baseline
from rankprune.findings.law import Law, check_law
from rankprune.study import SAMPLER_ALIASES, StudySpec, _grid, make_sampler, parse_spec

__all__ = ["Suite", "Experiment", "parse_suite", "with_overrides", "DEFAULT_SUITE"]

DEFAULT_SUITE = "studies/findings/suite.toml"
SUITE_KEYS = ("name", "description")
EXPERIMENT_KEYS = ("file", "question", "seeds", "cost", "hypotheses", "show", "classes", "published")
# What an experiment may show besides its hypotheses (report.extras draws each): its study report's equivalence
# classes and its heatmaps over a two-parameter grid, the overfitting pairs of its trials.
SHOW = ("classes", "heatmaps", "overfitting_pairs")
CLASS_BY = ("vector", "sum", "normalized")  # classes.BY: what equal classes share
PUBLISHED_KEYS = ("method", "source", "widths", "error", "parameters", "note")


@dataclass(frozen=True)
class Experiment:
    """One study of the suite: its spec (seeds injected into its space), the question it answers, its hypotheses."""
    file: Path
    spec: StudySpec
    question: int
    seeds: tuple[int, ...]
    cost: str | None
    hypotheses: tuple[Hypothesis, ...]
    show: tuple[str, ...] = ()  # SHOW
    classes: tuple[str, float] = ("vector", 0.0)  # equivalence classes by, within tol (`rankprune study classes`)
    published: tuple[dict, ...] = ()  # published results to set beside the study's (PUBLISHED_KEYS)

    @property
    def name(self) -> str:
        return self.spec.name

    def question_of(self, index: int) -> int:
        """The question the experiment's index-th hypothesis answers: its own, else the experiment's."""
        own = self.hypotheses[index].question
        return self.question if own is None else own

    @property
    def questions(self) -> list[int]:
        """Every question its hypotheses answer, in number order; its own for a study only a law reads."""
        if not self.hypotheses:
            return [self.question]
        return sorted({self.question_of(k) for k in range(len(self.hypotheses))})

    @property
    def declared(self) -> int:
        """Its trials: the number of cells of its grid, seeds included."""
        return math.prod(len(v) for v in _grid(self.spec).values())


@dataclass(frozen=True)
class Suite:
    path: Path
    name: str
    description: str
    questions: dict[int, str]
    experiments: list[Experiment]
    laws: tuple[Law, ...] = ()
    baselines: tuple[Baseline, ...] = ()

    def select(self, only: list[str] | None) -> list[Experiment]:
        """The experiments named in `only` (all of them for None or []), in the suite's order; an unknown name (of no
        experiment nor baseline) is a ConfigError listing the known ones."""
        if not only:
            return list(self.experiments)
        names = [e.name for e in self.experiments] + [b.name for b in self.baselines]
        unknown = [n for n in only if n not in names]
        if unknown:
            hint = "; give SUITE before --only" if unknown[0].endswith(".toml") else ""
            raise ConfigError(f"--only {unknown[0]}: no such experiment in {self.path}; it has {', '.join(names)}{hint}")
        return [e for e in self.experiments if e.name in only]

    def select_baselines(self, only: list[str] | None) -> list[Baseline]:
        """The baselines named in `only` (all of them for None or []): naming a study does not name its baselines."""
        return [b for b in self.baselines if not only or b.name in only]

    def experiment(self, name: str) -> Experiment:
        return next(e for e in self.experiments if e.name == name)


def _table(doc: dict, key: str, where: str, allowed: tuple[str, ...] | None) -> dict:
    value = doc.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: [{key}] must be a table")
    if allowed is not None:
        unknown = sorted(set(value) - set(allowed))
        if unknown:
            raise ConfigError(f"{where}: unknown key {key}.{unknown[0]}; known: {', '.join(allowed)}")
    return value


def _questions(doc: dict, where: str) -> dict[int, str]:
    questions = {}
    for key, title in _table(doc, "questions", where, None).items():
        if not key.isdigit():
            raise ConfigError(f"{where}: questions.{key} must be numbered: 1 = \"...\", 2 = \"...\"")
        if not isinstance(title, str) or not title.strip():
            raise ConfigError(f"{where}: questions.{key} must be a non-empty string (the section's title)")
        questions[int(key)] = title
    return dict(sorted(questions.items()))


def _seeds(value: Any, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where}: seeds must be a non-empty list of seeds, e.g. seeds = [0, 1, 2]")
    for s in value:
        if not isinstance(s, int) or isinstance(s, bool) or not 0 <= s <= MAX_SEED:
            raise ConfigError(f"{where}: seeds must be integers from 0 to {MAX_SEED}, got {s!r}")
    if len(set(value)) != len(value):
        repeated = next(s for s in value if value.count(s) > 1)
        raise ConfigError(f"{where}: seeds holds {repeated} twice; each seed is one replicate")
    return tuple(value)


def _experiment(i: int, raw: Any, suite_path: Path, questions: dict[int, str]) -> Experiment:
    where = f"{suite_path}: experiment {i + 1}"
    check_entry(raw, where, " ([[experiment]])", EXPERIMENT_KEYS, ("file", "question", "seeds"))
    if not isinstance(raw["file"], str) or not raw["file"]:
        raise ConfigError(f"{where}: file must be the path of a study file, relative to the suite file")
    where = f"{suite_path}: experiment {i + 1} ({raw['file']})"
    question = check_question(raw["question"], questions, where)
    seeds = _seeds(raw["seeds"], where)
    cost = raw.get("cost")
    if cost is not None and not (isinstance(cost, str) and cost.strip()):
        raise ConfigError(f"{where}: cost must be a string, e.g. \"about 6 minutes on 2 CPU cores\"")
    path = suite_path.parent / raw["file"]
    if not path.is_file():
        raise ConfigError(f"{where}: no study file at {path}")
    spec = parse_spec(path)  # its own problems name its own file
    if SAMPLER_ALIASES.get(spec.sampler.lower(), spec.sampler) != "GridSampler":
        raise ConfigError(f"{path}: study.sampler must be \"grid\" in a suite (its trials are then its grid's cells), "
                          f"got {spec.sampler!r}")
    if "seed" in spec.space:
        raise ConfigError(f"{path}: space.seed is set by the suite's seeds ({where}); remove it from the study file")
    # the seeds go into the space and nothing else: not [base], not the sampler's seed (which orders the grid)
    spec = dataclasses.replace(spec, space={**spec.space, "seed": {"choices": list(seeds)}})
    make_sampler(spec, spec.seed)  # a grid that cannot be made fails here
    hypotheses = raw.get("hypotheses", [])  # none: a study that only a [[law]] (or another section) reads
    if not isinstance(hypotheses, list):
        raise ConfigError(f"{where}: hypotheses must be a list of tables, e.g. "
                          "[{ kind = \"trend\", x = \"...\", y = \"total_width\" }]")
    parsed = tuple(check_hypothesis(h, spec, f"{where}: hypotheses[{k}]") for k, h in enumerate(hypotheses))
    for k, h in enumerate(parsed):
        if h.question is not None and h.question not in questions:
            raise ConfigError(f"{where}: hypotheses[{k}]: question must be a number of [questions] "
                              f"({', '.join(map(str, questions))}), got {h.question!r}")
    return Experiment(path, spec, question, seeds, cost, parsed, *_extras(raw, where))


def _extras(raw: dict, where: str) -> tuple[tuple[str, ...], tuple[str, float], tuple[dict, ...]]:
    """An experiment's show, classes and published entries, checked."""
    show = raw.get("show", [])
    if not isinstance(show, list) or any(v not in SHOW for v in show):
        raise ConfigError(f"{where}: show must be a list of {', '.join(SHOW)}, got {show!r}")
    classes = raw.get("classes", {})
    if not isinstance(classes, dict) or set(classes) - {"by", "tol"}:
        raise ConfigError(f"{where}: classes must be a table {{ by = \"vector\", tol = 0 }}, got {classes!r}")
    by, tol = classes.get("by", "vector"), classes.get("tol", 0)
    if by not in CLASS_BY:
        raise ConfigError(f"{where}: classes.by must be one of {', '.join(CLASS_BY)}, got {by!r}")
    if not isinstance(tol, (int, float)) or isinstance(tol, bool) or not (tol >= 0 and math.isfinite(tol)):
        raise ConfigError(f"{where}: classes.tol must be a non-negative number, got {tol!r}")
    published = raw.get("published", [])
    if not isinstance(published, list):
        raise ConfigError(f"{where}: published must be a list of tables {{ method, source, widths, error }}")
    for k, row in enumerate(published):
        at = f"{where}: published[{k}]"
        check_entry(row, at, " { method, source, widths, error }", PUBLISHED_KEYS, ("method", "source", "error"))
        error = row["error"]
        if not isinstance(error, (int, float)) or isinstance(error, bool) or not 0 <= error <= 1:
            raise ConfigError(f"{at}: error must be a fraction in [0, 1] (1.6% is 0.016), got {error!r}")
        for key in ("method", "source", "widths", "note"):
            if key in row and not (isinstance(row[key], str) and row[key].strip()):
                raise ConfigError(f"{at}: {key} must be a non-empty string")
        if "parameters" in row and (not isinstance(row["parameters"], int) or row["parameters"] < 1):
            raise ConfigError(f"{at}: parameters must be a whole number of at least 1")
    return tuple(show), (by, float(tol)), tuple(published)


def parse_suite(path: str | Path) -> Suite:
    """Read and validate a suite file and every study file it names; every problem is a one-line ConfigError."""
    path = Path(path)
    where = str(path)
    doc = load_toml(path)
    unknown = sorted(set(doc) - {"suite", "questions", "experiment", "law", "baseline"})
    if unknown:
        raise ConfigError(f"{where}: unknown table [{unknown[0]}]; known: suite, questions, experiment, law, baseline")
    suite = _table(doc, "suite", where, SUITE_KEYS)
    for key in SUITE_KEYS:
        if not isinstance(suite.get(key, ""), str):
            raise ConfigError(f"{where}: suite.{key} must be a string")
    if not suite.get("name", "").strip():
        raise ConfigError(f"{where}: [suite] needs name = \"...\"")
    questions = _questions(doc, where)
    raw = doc.get("experiment", [])
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{where}: no [[experiment]]; a suite needs at least one")
    experiments = [_experiment(i, e, path, questions) for i, e in enumerate(raw)]
    seen: dict[str, Path] = {}
    for e in experiments:
        if e.name in seen:
            raise ConfigError(f"{where}: study name {e.name!r} is used by both {seen[e.name]} and {e.file}; "
                              "each experiment needs a study of its own")
        seen[e.name] = e.file
    laws = _laws(doc.get("law", []), path, questions, experiments)
    baselines = _baselines(doc.get("baseline", []), path, questions, experiments)
    return Suite(path, suite["name"], suite.get("description", ""), questions, experiments, laws, baselines)


def _tables(raw: Any, path: Path, kind: str, check, questions: dict[int, str],
            experiments: list[Experiment]) -> tuple:
    """The [[kind]] tables of a suite file, each checked by `check` against the experiments it names."""
    if not isinstance(raw, list):
        raise ConfigError(f"{path}: {kind} must be an array of tables: [[{kind}]]")
    by_name = {e.name: e for e in experiments}
    return tuple(check(r, by_name, questions, f"{path}: {kind} {i + 1}") for i, r in enumerate(raw))


def _laws(raw: Any, path: Path, questions: dict[int, str], experiments: list[Experiment]) -> tuple[Law, ...]:
    """The [[law]] tables; names unique."""
    laws = _tables(raw, path, "law", check_law, questions, experiments)
    names = [law.name for law in laws]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: law name {next(n for n in names if names.count(n) > 1)!r} is used twice")
    return laws


def _baselines(raw: Any, path: Path, questions: dict[int, str], experiments: list[Experiment]) -> tuple[Baseline, ...]:
    """The [[baseline]] tables; names unique, and no study's."""
    baselines = _tables(raw, path, "baseline", check_baseline, questions, experiments)
    names = [b.name for b in baselines]
    studies = {e.name for e in experiments}
    for n in names:
        if names.count(n) > 1 or n in studies:
            raise ConfigError(f"{path}: baseline name {n!r} is used twice (or by a study); `--only` needs one name each")
    return baselines


def with_overrides(suite: Suite, data_dir: str | None = None, download: bool | None = None,
                   device: str | None = None) -> Suite:
    """The suite with every study's [base] changed as the runner's flags say: data.data_dir, data.download, device."""
    def one(spec: StudySpec) -> StudySpec:
        base = dict(spec.base)
        data = dict(base.get("data", {}))
        if data_dir is not None:
            data["data_dir"] = data_dir
        if download is not None:
            data["download"] = download
        base["data"] = data
        if device is not None:
            base["device"] = device
        return dataclasses.replace(spec, base=base)

    return dataclasses.replace(suite, experiments=[dataclasses.replace(e, spec=one(e.spec)) for e in suite.experiments])
