"""A law of the convergent width, tested on settings it did not see (issue 20, question 7).

    log(y) = b0 + sum_k b_k f_k(knob_k)        f_k: "log" (a power law in the knob) or "linear" (exponential in it)

is fitted by ordinary least squares (numpy.linalg.lstsq) on one row per (setting, seed) of its fit studies: runs
of one setting and seed in several fit studies (the default setting is a point of every one-knob grid) are one
observation, their values averaged, so the default is not counted once per study. It is tested two ways:

    leave one out   for every value of each knob other than its reference (the value the first fit study's [base]
                    gives it), the law refitted without every run at that value predicts that setting
    combinations    the law fitted on every fit study predicts each setting of the held-out studies: knob
                    combinations no fit study ran (a setting a fit study did run is shown, and not counted)

Per held-out setting: the observed mean over seeds, its across-seed SD, the prediction exp(b . f(x)) (a geometric
mean: the fit is on log y) and the relative error (pred - obs) / obs, judged against the law's tolerance
(|error| <= 0.15) and against the seeds' own spread: within it where |pred - obs| <= 2 SD / sqrt(n), two standard
errors of the observed mean (SPREAD_SE). A knob value outside the range the law was fitted on is an
extrapolation, and marked. Censored runs (a width that is a bound, not a measurement) are left out of the fit and
of every observed mean, and counted; a setting whose every run is censored shows its bounds and is not judged.

A run's knob values come from its config: the trial's parameters over its study's [space] and [base]
(study._trial_config), so a knob a study does not vary takes the value its study file or RunConfig's default
gives it. data.classes unset means all of the dataset's classes, data.tasks unset the one plain task.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pandas as pd

from rankprune.analysis import is_censored
from rankprune.config import ConfigError, task_sampling_inert
from rankprune.findings.frame import METRICS
from rankprune.findings.entries import check_entry, check_name, check_question

__all__ = ["Knob", "Law", "Fit", "Prediction", "LawOutcome", "TRANSFORMS", "TOLERANCE", "SPREAD_SE", "check_law",
           "cell_setting", "observations", "combine", "HeldOut", "grid_settings", "fit_law", "evaluate_law", "law_sentence"]

TRANSFORMS: dict[str, Callable[[np.ndarray], np.ndarray]] = {"log": np.log, "linear": lambda v: v}
TOLERANCE = 0.15  # the issue's: the law predicts within 15%
SPREAD_SE = 2.0  # within the seeds' spread: |pred - obs| <= SPREAD_SE * SD / sqrt(n)
LAW_KEYS = ("name", "question", "y", "knobs", "fit", "held_out", "tolerance")
KNOB_KEYS = ("param", "transform")
UNIT = "seed"
# Settings in which the studies of one law may differ without the law having a term for them: the seed is the unit
# of replication, the rest say where the run happens.
IGNORED = ("seed", "device", "format_version", "data.data_dir", "data.download")
# The classes of each dataset, for data.classes unset (all of them); the data module learns it only by loading.
DATASET_CLASSES = {"mnist": 10, "fashion-mnist": 10, "kmnist": 10, "digits": 10}
UNSET = {"data.classes": lambda s: DATASET_CLASSES.get(s["data.dataset"]), "data.tasks": lambda s: 1}
DIGITS = 12  # knob values are matched at this many significant digits (0.1 from a TOML file and from a trial)


@dataclass(frozen=True)
class Knob:
    param: str  # a dotted setting of the run config: "data.classes"
    transform: str  # a key of TRANSFORMS

    @property
    def short(self) -> str:
        return self.param.rpartition(".")[2]

    def term(self) -> str:
        return f"log({self.param})" if self.transform == "log" else self.param


@dataclass(frozen=True)
class Law:
    name: str
    question: int
    y: str
    knobs: tuple[Knob, ...]
    fit: tuple[str, ...]  # study names of the suite's experiments
    held_out: tuple[str, ...]
    tolerance: float
    reference: dict[str, float]  # per knob param: its value in the first fit study's [base]

    @property
    def params(self) -> list[str]:
        return [k.param for k in self.knobs]

    def formula(self) -> str:
        return f"log({self.y}) = b0 + " + " + ".join(f"b_{k.short}·{k.term()}" for k in self.knobs)


# --- the suite file -----------------------------------------------------------------------------------------
def cell_setting(spec, params: dict[str, Any]) -> dict[str, Any]:
    """Every setting of the run a cell of `spec`'s grid makes (its `params`, seed or not), by dotted name:
    "data.classes", "model.width", ..., and "depth", "width", "width_profile", "mode"."""
    from rankprune.study import ARCHITECTURE_KEYS, _trial_config

    values = {k: v for k, v in spec.space.items() if not isinstance(v, dict)}
    values.update(params)
    arch = {k: values.pop(k) for k in ARCHITECTURE_KEYS if k in values}
    if isinstance(arch.get("depth"), dict):
        raise ConfigError(f"{spec.name}: the cell gives no depth")
    cfg = _trial_config(spec.base, spec.mode, int(arch["depth"]), values).resolved()
    flat: dict[str, Any] = {"mode": spec.mode, "depth": int(arch["depth"]),
                            "width_profile": arch.get("width_profile", "constant")}
    for section, value in cfg.to_dict().items():
        if isinstance(value, dict):
            flat.update({f"{section}.{k}": tuple(v) if isinstance(v, list) else v for k, v in value.items()})
        else:
            flat[section] = value
    flat["width"] = arch.get("width", cfg.model.width)
    return flat


def _knob_value(setting: dict[str, Any], param: str) -> Any:
    value = setting[param]
    if value is None and param in UNSET:
        value = UNSET[param](setting)
    return value


def _base(spec) -> dict[str, Any]:
    """The setting of the study's [base] (and fixed [space] values), its grid's parameters left at their base."""
    return cell_setting(spec, {})


def _names(value: Any, key: str, where: str, experiments: dict, required: bool) -> tuple[str, ...]:
    example = f"{key} = [\"q2_classes\", \"q2_tasks\"]"
    if value is None and not required:
        return ()
    if not isinstance(value, list) or (required and not value) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: {key} must be a {'non-empty ' if required else ''}list of study names of the "
                          f"suite's experiments, e.g. {example}")
    for v in value:
        if v not in experiments:
            raise ConfigError(f"{where}: {key}: no experiment of the suite runs study {v!r}; it has "
                              f"{', '.join(experiments)}")
    if len(set(value)) != len(value):
        raise ConfigError(f"{where}: {key} names {next(v for v in value if value.count(v) > 1)!r} twice")
    return tuple(value)


def _knobs(value: Any, where: str) -> tuple[Knob, ...]:
    example = '[{ param = "data.classes", transform = "log" }]'
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where}: knobs must be a non-empty list of tables, e.g. knobs = {example}")
    knobs = []
    for i, raw in enumerate(value):
        at = f"{where}: knobs[{i}]"
        check_entry(raw, at, f", e.g. {example[1:-1]}", KNOB_KEYS)
        param, transform = raw.get("param"), raw.get("transform")
        if not isinstance(param, str) or "." not in param:
            raise ConfigError(f"{at}: param must be a dotted setting of the run config, e.g. \"data.classes\", "
                              f"got {param!r}")
        if transform not in TRANSFORMS:
            raise ConfigError(f"{at}: transform must be one of {', '.join(TRANSFORMS)}, got {transform!r}")
        if param in [k.param for k in knobs]:
            raise ConfigError(f"{at}: param {param!r} is a knob already")
        knobs.append(Knob(param, transform))
    return tuple(knobs)


def _check_studies(law: Law, experiments: dict, where: str) -> dict[str, float]:
    """Every study of the law varies only its knobs (and the seed), runs at the same settings otherwise, and gives
    each knob a number (above 0 for a log); each knob varies in the fit studies. Returns the reference values."""
    from rankprune.findings.progress import grid_cells
    from rankprune.study import _grid

    first_name, first = None, None
    fitted: dict[str, set] = {p: set() for p in law.params}
    for name in (*law.fit, *law.held_out):
        spec = experiments[name].spec
        cells = [{k: v for k, v in c.items() if k != UNIT} for c in grid_cells(spec)]
        settings = [cell_setting(spec, c) for c in {repr(sorted(c.items())): c for c in cells}.values()]
        for param in law.params:
            if param not in settings[0]:
                raise ConfigError(f"{where}: knob {param!r} is not a setting of a run; e.g. data.classes, "
                                  "data.label_noise, data.tasks, data.train_fraction")
        for key, values in _grid(spec).items():
            if key != UNIT and key not in law.params and len(set(map(repr, values))) > 1:
                raise ConfigError(f"{where}: study {name} varies {key}, which is no knob of the law")
        constant = {k: v for k, v in settings[0].items() if k not in law.params and k not in IGNORED}
        if task_sampling_inert({"tasks": settings[0].get("data.tasks"), "task_sampling": settings[0].get("data.task_sampling")}):
            constant.pop("data.task_sampling", None)  # how tasks are drawn matters only where they are
            constant.pop("data.task_samples", None)
        if first is None:
            first_name, first = name, constant
        for key in sorted(set(first) | set(constant)):
            if first.get(key) != constant.get(key):
                raise ConfigError(f"{where}: study {name} runs at {key} = {constant.get(key)!r} and {first_name} at "
                                  f"{first.get(key)!r}; a law's studies may differ only in its knobs")
        for s in settings:
            for knob in law.knobs:
                v = _knob_value(s, knob.param)
                if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
                    raise ConfigError(f"{where}: knob {knob.param} is {v!r} in study {name}; a knob must be a number")
                if knob.transform == "log" and v <= 0:
                    raise ConfigError(f"{where}: knob {knob.param} takes {v!r} in study {name}; transform \"log\" "
                                      "needs values above 0 (use transform = \"linear\")")
                if name in law.fit:
                    fitted[knob.param].add(_key(v))
    for param, values in fitted.items():
        if len(values) < 2:
            raise ConfigError(f"{where}: knob {param} takes one value in every fit study; the law cannot fit its "
                              "coefficient: fit on a study that varies it")
    base = _base(experiments[law.fit[0]].spec)
    return {p: float(_knob_value(base, p)) for p in law.params}


def check_law(raw: Any, experiments: dict, questions: dict[int, str], where: str) -> Law:
    """A suite file's [[law]] table, checked against the suite's experiments (by study name): a Law, or a one-line
    ConfigError naming `where` and the key."""
    check_entry(raw, where, " ([[law]])", LAW_KEYS, ("name", "question", "y", "knobs", "fit"))
    name = check_name(raw["name"], where, "the figure")
    where = f"{where} ({name})"
    question = check_question(raw["question"], questions, where)
    y = raw["y"]
    if y not in METRICS:
        raise ConfigError(f"{where}: y = {y!r} is not a known metric; choose from {', '.join(METRICS)}")
    knobs = _knobs(raw["knobs"], where)
    fit = _names(raw["fit"], "fit", where, experiments, required=True)
    held_out = _names(raw.get("held_out"), "held_out", where, experiments, required=False)
    both = [n for n in held_out if n in fit]
    if both:
        raise ConfigError(f"{where}: study {both[0]!r} is both fitted and held out; a held-out setting is one the law "
                          "did not see")
    tolerance = raw.get("tolerance", TOLERANCE)
    if not isinstance(tolerance, (int, float)) or isinstance(tolerance, bool) or not 0 < tolerance < 1:
        raise ConfigError(f"{where}: tolerance must be a relative error between 0 and 1, e.g. 0.15, got {tolerance!r}")
    law = Law(name, question, y, knobs, fit, held_out, float(tolerance), {})
    reference = _check_studies(law, experiments, where)
    return Law(name, question, y, knobs, fit, held_out, float(tolerance), reference)


# --- observations ----------------------------------------------------------------------------------------------
def _key(v: float) -> float:
    """A knob value as settings are matched: 0.1 from a TOML file and 0.1 from a trial are one value."""
    return float(f"{float(v):.{DIGITS}g}")


OBSERVATION_COLUMNS = ("study", UNIT, "value", "censored", "bound", "limit", "runs")


def observations(frame: pd.DataFrame, experiment, law: Law) -> pd.DataFrame:
    """One row per (setting, seed) of a study's trials table (frame.trials_table) inside its grid: each knob's
    value (the trial's parameter, else its study's [base] or the config's default), the seed, `value` (the
    mean of its measured runs' y; NaN where every run is censored), censored, bound (a censored run's y as the
    bound it is, '>= 272'), runs. Rows whose y is missing or not above 0 (no log) are left out."""
    from rankprune.findings.hypotheses import _bound_value
    from rankprune.findings.progress import cell_key, grid_cells
    from rankprune.study import _grid

    columns = [*law.params, *OBSERVATION_COLUMNS]
    grid = list(_grid(experiment.spec))
    if frame.empty or law.y not in frame or any(k not in frame for k in grid):
        return pd.DataFrame(columns=columns)
    cells = {cell_key(c) for c in grid_cells(experiment.spec)}
    settings: dict[tuple, dict] = {}
    rows = []
    flags = is_censored(frame["censored"]) if "censored" in frame else pd.Series(False, index=frame.index)
    for (_, row), censored in zip(frame.iterrows(), flags):
        params = {k: row[k] for k in grid}
        if cell_key(params) not in cells:
            continue  # outside the suite's grid: its study file changed since
        y = row[law.y]
        if y is None or not (isinstance(y, (int, float)) and math.isfinite(y) and y > 0):
            continue
        key = cell_key({k: v for k, v in params.items() if k != UNIT})
        if key not in settings:
            s = cell_setting(experiment.spec, {k: v for k, v in params.items() if k != UNIT})
            settings[key] = {p: _key(_knob_value(s, p)) for p in law.params}
        rows.append({**settings[key], "study": experiment.name, UNIT: row[UNIT], "value": float(y),
                     "censored": bool(censored), "bound": _bound_value(row, law.y) if censored else "",
                     "limit": float(y) if censored else math.nan, "runs": 1})
    if not rows:
        return pd.DataFrame(columns=columns)
    return _merge(pd.DataFrame(rows), law)


def _merge(rows: pd.DataFrame, law: Law) -> pd.DataFrame:
    """One observation per (setting, seed): the mean of its measured runs, censored only where every run is."""
    out = []
    for key, part in rows.groupby([*law.params, UNIT], sort=True):
        censored = bool(part["censored"].astype(bool).all())
        measured = part.loc[~part["censored"].astype(bool), "value"]
        out.append({**dict(zip([*law.params, UNIT], key)), "study": ", ".join(dict.fromkeys(part["study"])),
                    "value": math.nan if censored else float(measured.mean()), "censored": censored,
                    "bound": ", ".join(b for b in part["bound"] if b) if censored else "",
                    "limit": float(part["limit"].max()) if censored else math.nan, "runs": int(part["runs"].sum())})
    return pd.DataFrame(out, columns=[*law.params, *OBSERVATION_COLUMNS])


def combine(parts: list[pd.DataFrame], law: Law) -> pd.DataFrame:
    """The observations of several studies as one table: a (setting, seed) two studies ran is one observation
    (the default setting is a point of every one-knob grid: counted once, not once per study)."""
    parts = [p for p in parts if len(p)]
    if not parts:
        return pd.DataFrame(columns=[*law.params, *OBSERVATION_COLUMNS])
    return _merge(pd.concat(parts, ignore_index=True), law)


def grid_settings(experiment, law: Law) -> list[dict[str, float]]:
    """The knob values of each setting of a study's grid (its cells without the seed), in grid order."""
    from rankprune.findings.progress import grid_cells

    out: dict[tuple, dict] = {}
    for cell in grid_cells(experiment.spec):
        s = cell_setting(experiment.spec, {k: v for k, v in cell.items() if k != UNIT})
        values = {p: _key(_knob_value(s, p)) for p in law.params}
        out.setdefault(tuple(values.values()), values)
    return list(out.values())


# --- the fit -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Fit:
    terms: tuple[str, ...]  # "intercept", then each knob's param
    coefficients: tuple[float, ...]
    transforms: tuple[str, ...]  # per knob
    n: int  # observations fitted on
    rank: int  # of the design; the law is identified where it equals len(terms)
    residual_sd: float  # of log y, over n - len(terms) degrees of freedom; NaN without any
    ranges: dict[str, tuple[float, float]]  # per knob: the lowest and highest value fitted on

    @property
    def identified(self) -> bool:
        return self.rank == len(self.terms)

    def log_predict(self, setting: dict[str, float]) -> float:
        f = [1.0] + [float(TRANSFORMS[t](np.asarray(setting[p], dtype=float)))
                     for p, t in zip(self.terms[1:], self.transforms)]
        return float(np.dot(self.coefficients, f))

    def predict(self, setting: dict[str, float]) -> float:
        return math.exp(self.log_predict(setting)) if self.identified else math.nan

    def extrapolated(self, setting: dict[str, float]) -> tuple[str, ...]:
        """The knobs whose value lies outside the range the law was fitted on."""
        return tuple(p for p, (lo, hi) in self.ranges.items() if not lo <= setting[p] <= hi)


def _design(rows: pd.DataFrame, law: Law) -> np.ndarray:
    columns = [np.ones(len(rows))]
    columns += [TRANSFORMS[k.transform](rows[k.param].to_numpy(dtype=float)) for k in law.knobs]
    return np.column_stack(columns)


def fit_law(obs: pd.DataFrame, law: Law) -> Fit:
    """log(value) = b0 + sum_k b_k f_k(knob_k), by least squares over the measured observations."""
    rows = obs[~obs["censored"].astype(bool)]
    x, y = _design(rows, law), np.log(rows["value"].to_numpy(dtype=float))
    terms = ("intercept", *law.params)
    if len(rows) == 0:
        return Fit(terms, (math.nan,) * len(terms), tuple(k.transform for k in law.knobs), 0, 0, math.nan, {})
    b, _, rank, _ = np.linalg.lstsq(x, y, rcond=None)
    dof = len(rows) - len(terms)
    residual = y - x @ b
    sd = math.sqrt(float(residual @ residual) / dof) if dof > 0 else math.nan
    ranges = {p: (float(rows[p].min()), float(rows[p].max())) for p in law.params}
    return Fit(terms, tuple(float(v) for v in b), tuple(k.transform for k in law.knobs), len(rows), int(rank), sd,
               ranges)


# --- predictions -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Prediction:
    test: str  # "leave one out" or "combination"
    study: str  # the study (or studies) whose runs it is
    label: str  # its name in the table and the figure: "classes 3", or "c1" for a combination
    setting: dict[str, float]  # every knob's value
    observed: float  # the mean over seeds of the measured observations; NaN without any
    sd: float  # their SD across seeds (ddof 1); NaN below 2 seeds
    n: int  # measured seeds
    censored: int  # seeds whose runs are all censored (left out)
    bounds: str  # those runs' values as the bounds they are
    limits: tuple[float, ...]  # those runs' values
    seeds: int  # the seeds its study declares
    predicted: float  # NaN where the law is not identified
    extrapolated: tuple[str, ...]  # knobs outside the range the law was fitted on
    seen: bool = False  # a combination a fit study ran: shown, not counted as held out

    @property
    def run(self) -> bool:
        """Every seed ran (measured or censored)."""
        return self.n + self.censored >= self.seeds

    @property
    def judged(self) -> bool:
        """Counted in the verdict: every seed ran, at least one measured, the law identified, not in the fit."""
        return self.run and self.n > 0 and not math.isnan(self.predicted) and not self.seen

    @property
    def error(self) -> float:
        """(pred - obs) / obs."""
        return (self.predicted - self.observed) / self.observed if self.n else math.nan

    def within(self, tolerance: float) -> bool:
        return abs(self.error) <= tolerance

    @property
    def within_spread(self) -> bool | None:
        """|pred - obs| <= SPREAD_SE * SD / sqrt(n); None below 2 seeds (no SD)."""
        if self.n < 2 or math.isnan(self.sd):
            return None
        return abs(self.predicted - self.observed) <= SPREAD_SE * self.sd / math.sqrt(self.n)

    def where(self, reference: dict[str, float]) -> str:
        """Its knob values that differ from the reference: "data.classes 3, data.label_noise 0.1"."""
        changed = [f"{p} {v:g}" for p, v in self.setting.items() if v != reference.get(p)]
        return ", ".join(changed) or "the reference"


def _stats(rows: pd.DataFrame) -> tuple[float, float, int, int, str, tuple[float, ...]]:
    """(mean, SD across seeds, measured seeds, censored seeds, bounds, their values) of one setting's observations."""
    measured = rows.loc[~rows["censored"].astype(bool), "value"].to_numpy(dtype=float)
    censored = rows[rows["censored"].astype(bool)]
    bounds = ", ".join(f"{UNIT} {s}: {b}" for s, b in zip(censored[UNIT], censored["bound"]))
    mean = float(measured.mean()) if len(measured) else math.nan
    sd = float(measured.std(ddof=1)) if len(measured) > 1 else math.nan
    return mean, sd, len(measured), len(censored), bounds, tuple(float(v) for v in censored["limit"])


def _at(obs: pd.DataFrame, setting: dict[str, float]) -> pd.Series:
    here = pd.Series(True, index=obs.index)
    for p, v in setting.items():
        here &= obs[p].astype(float) == v
    return here


def _settings(obs: pd.DataFrame, law: Law) -> list[dict[str, float]]:
    if obs.empty:
        return []
    return [dict(zip(law.params, map(float, key)))
            for key in obs[law.params].drop_duplicates().sort_values(law.params).itertuples(index=False)]


def _predict(test: str, study: str, label: str, fit: Fit, setting: dict[str, float], rows: pd.DataFrame,
             seeds: int, seen: bool = False) -> Prediction:
    mean, sd, n, censored, bounds, limits = _stats(rows)
    return Prediction(test, study, label, setting, mean, sd, n, censored, bounds, limits, seeds, fit.predict(setting),
                      fit.extrapolated(setting), seen)


def leave_one_out(obs: pd.DataFrame, law: Law) -> list[Prediction]:
    """For each knob and each of its values other than the reference: the law refitted without every observation at
    that value, predicting each setting held out (one, where each fit study varies one knob)."""
    seeds = int(obs[UNIT].nunique()) if len(obs) else 0
    out = []
    for knob in law.knobs:
        for value in sorted(set(obs[knob.param].astype(float))):
            if value == law.reference[knob.param]:
                continue
            held = obs[knob.param].astype(float) == value
            fit = fit_law(obs[~held], law)
            for setting in _settings(obs[held], law):
                rows = obs[held & _at(obs, setting)]
                study = ", ".join(dict.fromkeys(rows["study"]))
                out.append(_predict("leave one out", study, f"{knob.short} {value:g}", fit, setting, rows, seeds))
    return out


@dataclass(frozen=True)
class HeldOut:
    """A held-out study: its observations so far, the settings of its grid and the seeds it declares."""
    name: str
    obs: pd.DataFrame
    settings: list[dict[str, float]]
    seeds: int


def combinations(fit: Fit, fit_obs: pd.DataFrame, held: list[HeldOut], law: Law) -> list[Prediction]:
    """Each setting of each held-out study predicted by the law fitted on every fit study; a setting a fit study
    ran is marked seen."""
    fitted = {tuple(s.values()) for s in _settings(fit_obs, law)}
    out, number = [], 0
    for h in held:
        for setting in h.settings:
            number += 1
            rows = h.obs[_at(h.obs, setting)] if len(h.obs) else h.obs
            out.append(_predict("combination", h.name, f"c{number}", fit, setting, rows, h.seeds,
                                seen=tuple(setting.values()) in fitted))
    return out


@dataclass(frozen=True)
class LawOutcome:
    law: Law
    fit: Fit  # on every fit study
    predictions: tuple[Prediction, ...]
    observations: int  # (setting, seed) observations of the fit studies
    censored: int  # of them censored: left out of the fit

    @property
    def judged(self) -> list[Prediction]:
        return [p for p in self.predictions if p.judged]

    @property
    def failing(self) -> list[Prediction]:
        return [p for p in self.judged if not p.within(self.law.tolerance)]

    def points(self) -> pd.DataFrame:
        """What the figure draws: each held-out setting measured or only bounded, with a prediction (not the
        combinations a fit study ran)."""
        rows = []
        for p in self.predictions:
            if p.seen or not p.run or math.isnan(p.predicted):
                continue
            group = p.label.split(" ")[0] if p.test == "leave one out" else "combination"
            rows.append({"label": p.label.split(" ")[-1], "group": group, "observed": p.observed, "sd": p.sd,
                         "predicted": p.predicted, "extrapolated": bool(p.extrapolated),
                         "limit": max(p.limits) if p.n == 0 else math.nan})
        return pd.DataFrame(rows, columns=["label", "group", "observed", "sd", "predicted", "extrapolated", "limit"])

    def draw(self):
        from rankprune.findings.figures import law_predictions

        title = (f"{self.law.name}: log({self.law.y}) on {', '.join(k.short for k in self.law.knobs)}, predicted "
                 "against observed at settings it did not see")
        return law_predictions(self.points(), self.law.tolerance, self.law.y, title)

    def table(self) -> pd.DataFrame:
        """One row per held-out setting, as the report shows it."""
        rows = []
        for p in self.predictions:
            spread = p.within_spread
            rows.append({
                "test": p.test, "point": p.label, "setting": p.where(self.law.reference), "study": p.study,
                "observed mean": p.observed, "SD across seeds": p.sd,
                "SD / mean": p.sd / p.observed if p.n > 1 else math.nan, "n": p.n, "censored": p.censored,
                "predicted": p.predicted, "error": p.error,
                f"within {self.law.tolerance:.0%}": _yes(p.within(self.law.tolerance)) if p.judged else "",
                f"within {SPREAD_SE:g} SD/sqrt(n)": "" if spread is None or not p.judged else _yes(spread),
                "extrapolated": ", ".join(Knob(x, "").short for x in p.extrapolated) or "no",
                "status": _status(p),
            })
        return pd.DataFrame(rows)


def _yes(v: bool) -> str:
    return "yes" if v else "no"


def _status(p: Prediction) -> str:
    if p.seen:
        return "a fit study ran it: not held out"
    if math.isnan(p.predicted):
        return "no prediction: the law is not identified without it"
    if p.n + p.censored == 0:
        return "not run yet"
    if not p.run:
        return f"not run yet: {p.n + p.censored} of {p.seeds} seeds"
    if p.n == 0:
        side = "above" if p.predicted >= max(p.limits) else "below" if p.predicted < min(p.limits) else "among"
        return f"censored: only bounds ({p.bounds}); the prediction lies {side} them"
    return "judged" + (f"; {p.censored} censored left out ({p.bounds})" if p.censored else "")


def evaluate_law(law: Law, fit_obs: pd.DataFrame, held: list[HeldOut]) -> LawOutcome:
    """The law fitted on `fit_obs` (observations of every fit study: combine), tested by leave one out and on the
    held-out studies' settings."""
    fit = fit_law(fit_obs, law)
    predictions = leave_one_out(fit_obs, law) + combinations(fit, fit_obs, held, law)
    return LawOutcome(law, fit, tuple(predictions), len(fit_obs), int(fit_obs["censored"].astype(bool).sum()))


# --- the sentence ------------------------------------------------------------------------------------------------
def _failure(p: Prediction, reference: dict[str, float]) -> str:
    extra = f", extrapolated in {', '.join(Knob(x, '').short for x in p.extrapolated)}" if p.extrapolated else ""
    name = p.where(reference) if p.test == "leave one out" else f"{p.label} ({p.where(reference)})"
    return f"{name}: {p.error:+.0%}{extra}"


def law_sentence(outcome: LawOutcome | None, missing: str = "") -> str:
    """What the report concludes from a law, in one sentence: whether it predicts within its tolerance at every
    held-out setting measured, and where it fails."""
    if outcome is None:
        return "not run yet" + (f": {missing}" if missing else "")
    law, fit = outcome.law, outcome.fit
    tol = f"{law.tolerance:.0%}"
    if not fit.identified:
        return f"no law: its fit studies' measured runs do not determine all {len(fit.terms)} coefficients"
    judged, failing = outcome.judged, outcome.failing
    waiting = [p for p in outcome.predictions if not p.seen and not p.run]
    bounded = [p for p in outcome.predictions if not p.seen and p.run and p.n == 0]
    tail = ""
    if bounded:
        tail += f"; {len(bounded)} held-out setting(s) only bounded (every run censored), not judged"
    if waiting:
        tail += f"; {len(waiting)} held-out setting(s) not run yet"
    if not judged:
        return f"not answered: no held-out setting measured yet{tail}"
    parts = {t: [p for p in judged if p.test == t] for t in ("leave one out", "combination")}
    split = ", ".join(f"{t}: {sum(p.within(law.tolerance) for p in ps)} of {len(ps)}" for t, ps in parts.items() if ps)
    passed = len(judged) - len(failing)
    if not failing:
        worst = max(judged, key=lambda p: abs(p.error))
        return (f"the law predicts within {tol} at all {len(judged)} held-out settings measured ({split}); the largest "
                f"error is {worst.error:+.0%}, at {worst.where(law.reference)}{tail}")
    failures = "; ".join(_failure(p, law.reference) for p in sorted(failing, key=lambda p: -abs(p.error)))
    return (f"the law does not predict within {tol} everywhere: within {tol} at {passed} of {len(judged)} held-out "
            f"settings ({split}); it fails at {failures}{tail}")
