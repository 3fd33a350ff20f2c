"""Lazy training (Chizat, Oyallon and Bach 2019, "On Lazy Training in Differentiable Programming") as the course
notebook on it runs it: 1-D regression of a fixed target on a handful of points, full-batch SGD on the mean
squared error, and the relative movement of every weight matrix from where training started, per step.

Four experiments, each a list of units (one network each, `units(settings)`):

    widths           a shallow ReLU network (1-h-1) at widths 5, 10, 100, 1000; 15 points; lr 0.002; 50,000 steps
                     (the notebook's "thin vs wide")
    alpha            a deep ReLU network (three hidden layers of 8) made lazy by output scaling: it computes
                     alpha (f(x) - f_0(x)) (rankprune.scaling.center_and_scale), alpha in 1, 10, 100, 1000, at
                     lr 0.01 / alpha^2; all alphas of a seed share one base network; 10 points; 10,000 steps.
                     The notebook ran 1, 100, 1000; 10 is added so that a slope can be fitted to four points.
    random-features  the notebook's LinSin: fixed features sin(2 pi k x), cos(2 pi k x), k = 0 .. d/2 - 1, and one
                     trained linear layer; d = 8 for 10,000 steps and d = 200 for 100 steps, lr 0.01, 15 points
    bad-init         a shallow network of width 100 given a "bad initialisation" by 2 full-batch steps at lr 1, then
                     trained 1,000 steps at lr 0.001; beside it the same network trained the same 1,000 steps from
                     its default initialisation (the control)

Choices where the notebook's helper module (tp3_utils: Data, MLPshallow, MLPdeep, plot_net) is missing:

- Data: x uniform on [-1, 1] (the notebook prints a draw between -0.98 and 0.74: random, not a grid), y the
  regression target (rankprune.regression.TARGETS, "middle" as the notebook's type="middle") plus optional
  Gaussian noise. Each seed draws its own points, and every network of a seed shares them, so a seed is a
  whole replicate of the notebook's experiment.
- MLPdeep: three hidden ReLU layers of equal width (the notebook never prints its depth).
- PyTorch's default initialisation everywhere (the notebook's question "how are nets initialized in pytorch?"),
  drawn in float32 under a seed derived from the run's seed, then the network is cast to float64: at alpha 1000
  the weights move by about 1e-5 per step and alpha (f - f_0) is a difference of nearly equal outputs, where
  float32 rounding would be a sizeable part of what is measured. The networks are tiny; float64 costs little.
- The points, the initialisation and the batches (when the batch is smaller than the data) use three separate
  seeds derived from the run's seed, so that no two of them share a random stream.
- The training loss is torch's MSELoss (mean over points) of the network's output, the scaled output for alpha
  (as the notebook, which leaves its division by alpha^2 commented out).
- Weight decay: none by default. `decay_to_init` lambda adds the gradient of lambda/2 ||w - w_0||^2, a decay
  towards the weights where training started (for bad-init: where the 1,000 steps start), which does not pull
  a lazy network away from its initialisation as a decay to zero would.
- A network whose training loss stops being finite ends there, marked "diverged"; its rows stop at that step.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from rankprune.analysis.intervals import mean_interval
from rankprune.config import ConfigError
from rankprune.dynamics.steps import Movement, log_steps, run_steps
from rankprune.regression import TARGETS
from rankprune.scaling import center_and_scale
from rankprune.seeds import derive_seed

__all__ = [
    "EXPERIMENTS", "WIDTHS", "ALPHAS", "FEATURE_DIMS", "FIT_POINTS", "LazySettings", "points", "ShallowMLP", "DeepMLP",
    "SineFeatures", "optimizer", "train", "fit_grid", "units", "widths", "alpha", "random_features", "bad_init",
    "setting_of", "exponent",
]

WIDTHS = (5, 10, 100, 1000)
ALPHAS = (1, 10, 100, 1000)
FEATURE_DIMS = {8: (10_000, 0.01), 200: (100, 0.01)}  # feature_dim: (steps, lr), as the notebook
FIT_POINTS = 201  # the fitted function is stored on this many x evenly spaced over [-1, 1]
CHECKPOINTS = 120

# Seed tags (derive_seed's key): the points, the initialisation and the batches each draw from their own stream
# (torch.Generator().manual_seed(s) and torch.manual_seed(s) give the same numbers: with one seed for both, the
# points would have been the first layer's weights).
_DATA, _INIT, _BATCH = 300, 301, 302


# --- settings ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LazySettings:
    """What a lazy-training experiment runs. `steps` None: each experiment's own step counts (module docstring);
    a number replaces them all (bad-init: the steps after the 2 bad ones)."""

    experiment: str = "widths"
    seeds: tuple[int, ...] = (0, 1, 2)
    steps: int | None = None
    checkpoints: int = CHECKPOINTS
    target: str = "middle"
    noise: float = 0.0
    decay_to_init: float = 0.0

    def validate(self) -> "LazySettings":
        if self.experiment not in EXPERIMENTS:
            raise ConfigError(f"unknown lazy-training experiment {self.experiment!r}: one of {', '.join(EXPERIMENTS)}")
        seeds = list(self.seeds)
        if not seeds:
            raise ConfigError("give at least one seed")
        if any(not isinstance(s, (int, np.integer)) or isinstance(s, bool) or s < 0 for s in seeds):
            raise ConfigError(f"--seeds must be whole numbers >= 0, got {seeds}")
        if len(set(seeds)) != len(seeds):
            raise ConfigError(f"--seeds repeat: {seeds}")
        if self.steps is not None and (not isinstance(self.steps, (int, np.integer)) or isinstance(self.steps, bool)
                                       or self.steps < 1):
            raise ConfigError(f"--steps must be a whole number >= 1, got {self.steps!r}")
        if not isinstance(self.checkpoints, (int, np.integer)) or self.checkpoints < 1:
            raise ConfigError(f"--checkpoints must be a whole number >= 1, got {self.checkpoints!r}")
        if self.target not in TARGETS:
            raise ConfigError(f"unknown --target {self.target!r}: one of {', '.join(TARGETS)}")
        for name in ("noise", "decay_to_init"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be a finite number >= 0, got {v!r}")
        return self

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["seeds"] = [int(s) for s in self.seeds]
        return d


# --- data and models -----------------------------------------------------------------------------------------
def points(n: int, seed: int, target: str = "middle", noise: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """n training points of a 1-D regression: x (n, 1) uniform on [-1, 1] and y (n,) = target(x) + noise * N(0, 1),
    float64, from a torch.Generator seeded by `seed` (the same seed, the same points)."""
    if target not in TARGETS:
        raise ConfigError(f"unknown target {target!r}: one of {', '.join(TARGETS)}")
    g = torch.Generator().manual_seed(derive_seed(seed, _DATA))
    x = torch.rand(n, 1, generator=g, dtype=torch.float64) * 2 - 1
    y = TARGETS[target](x).reshape(-1)
    if noise > 0:
        y = y + noise * torch.randn(n, generator=g, dtype=torch.float64)
    return x, y


class ShallowMLP(nn.Module):
    """Linear(1, h) - ReLU - Linear(h, 1): 3h + 1 parameters (31 at h = 10, as the notebook prints)."""

    def __init__(self, hidden: int):
        super().__init__()
        self.hidden = hidden
        self.layers = nn.Sequential(nn.Linear(1, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class DeepMLP(nn.Module):
    """Linear(1, h) - ReLU - (Linear(h, h) - ReLU) x (layers - 1) - Linear(h, 1): `layers` hidden ReLU layers."""

    def __init__(self, hidden: int, layers: int = 3):
        super().__init__()
        self.hidden, self.depth = hidden, layers
        mods: list[nn.Module] = [nn.Linear(1, hidden), nn.ReLU()]
        for _ in range(layers - 1):
            mods += [nn.Linear(hidden, hidden), nn.ReLU()]
        mods.append(nn.Linear(hidden, 1))
        self.layers = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class SineFeatures(nn.Module):
    """The notebook's LinSin, a linear model on fixed features: phi(x) = (sin(2 pi k x) for k = 0 .. d/2 - 1, then
    cos(2 pi k x) for the same k), d = feature_dim (k = 0 gives the features 0 and 1, as in the notebook), and one
    trained Linear(d, 1) `lout`, the only parameters."""

    def __init__(self, feature_dim: int):
        super().__init__()
        if not isinstance(feature_dim, (int, np.integer)) or feature_dim < 2 or feature_dim % 2:
            raise ConfigError(f"feature_dim must be an even whole number >= 2, got {feature_dim!r}")
        self.feature_dim = int(feature_dim)
        self.lout = nn.Linear(self.feature_dim, 1)
        self.register_buffer("frequencies", 2 * math.pi * torch.arange(self.feature_dim // 2, dtype=torch.float32),
                             persistent=False)

    def phi(self, x: torch.Tensor) -> torch.Tensor:
        r = x.reshape(-1, 1) * self.frequencies.to(x.dtype)
        return torch.cat([torch.sin(r), torch.cos(r)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lout(self.phi(x))


def _seeded(build: Callable[[], nn.Module], seed: int) -> nn.Module:
    """`build()` under torch.manual_seed(derived seed) without touching the caller's random state, in float64."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, _INIT))
        model = build()
    return model.double()


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --- training ------------------------------------------------------------------------------------------------
def optimizer(model: nn.Module, lr: float) -> torch.optim.SGD:
    """Plain SGD (no momentum, no weight decay) over the parameters that train."""
    return torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr)


@torch.no_grad()
def _mse(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float(nn.functional.mse_loss(model(x).reshape(-1), y))


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, lr: float, steps: int, batch_size: int | None = None,
          checkpoints: int = CHECKPOINTS, seed: int = 0, decay_to_init: float = 0.0,
          origin: Movement | None = None) -> list[dict]:
    """`steps` steps of plain SGD on the mean squared error, on all points (batch_size None or >= n) or on a
    random batch of batch_size points (without replacement, seeded by `seed`) each step. Rows at step 0 and at
    log_steps(steps, checkpoints): "loss" (MSE on all training points), "movement" (per weight matrix) and
    "movement_network" from the weights as they were when called; with `origin` (a Movement taken earlier) also
    "movement_from_init" and "movement_network_from_init" from its weights. `decay_to_init` lambda adds
    lambda (w - w_0) to every gradient (w_0 the weights when called). Training stops at a row whose loss is not
    finite; that row is the last."""
    n = len(y)
    full = batch_size is None or batch_size >= n
    g = None if full else torch.Generator().manual_seed(derive_seed(seed, _BATCH))
    opt = optimizer(model, lr)
    moved = Movement(model)
    start = [p.detach().clone() for p in opt.param_groups[0]["params"]] if decay_to_init else None

    def step(_: int) -> None:
        if full:
            xb, yb = x, y
        else:
            idx = torch.randperm(n, generator=g)[:batch_size]
            xb, yb = x[idx], y[idx]
        opt.zero_grad(set_to_none=True)
        nn.functional.mse_loss(model(xb).reshape(-1), yb).backward()
        if start is not None:
            with torch.no_grad():
                for p, p0 in zip(opt.param_groups[0]["params"], start):
                    p.grad.add_(p.detach() - p0, alpha=decay_to_init)
        opt.step()

    def measure(_: int) -> dict:
        row = {"loss": _mse(model, x, y), **moved(model)}
        if origin is not None:
            far = origin(model)
            row["movement_from_init"], row["movement_network_from_init"] = far["movement"], far["movement_network"]
        return row

    return run_steps(step, steps, log_steps(steps, checkpoints), measure, stop=lambda r: not math.isfinite(r["loss"]))


def fit_grid(model: nn.Module | None = None) -> torch.Tensor:
    """x (count, 1) evenly spaced over [-1, 1] where a model's function is stored: FIT_POINTS, or for SineFeatures
    with more than 20 features 10 feature_dim + 1 points, about 10 per period of its fastest feature (201 points
    would alias sin(2 pi 99 x) of 200 features into noise)."""
    count = FIT_POINTS
    if isinstance(model, SineFeatures) and model.feature_dim > 20:
        count = max(FIT_POINTS, 10 * model.feature_dim + 1)
    return torch.linspace(-1, 1, count, dtype=torch.float64).reshape(-1, 1)


@torch.no_grad()
def _outputs(model: nn.Module, xs: torch.Tensor) -> list[float]:
    return [float(v) for v in model(xs).reshape(-1)]


def _result(experiment: str, seed: int, setting: str, value, model: nn.Module, x, y, rows: list[dict],
            settings: LazySettings, start_y: list[float], **extra) -> dict:
    xs = fit_grid(model)
    last = rows[-1]
    return {
        "experiment": experiment, "seed": int(seed), "setting": setting, setting: value, **extra,
        "target": settings.target, "noise": settings.noise, "decay_to_init": settings.decay_to_init,
        "n_points": len(y), "parameters": _count(model),
        "diverged": not math.isfinite(last["loss"]),
        "final": {k: last[k] for k in last if k != "step"} | {"step": last["step"]},
        "rows": rows,
        "x_train": [float(v) for v in x.reshape(-1)], "y_train": [float(v) for v in y],
        "fit_x": [float(v) for v in xs.reshape(-1)], "fit_y": _outputs(model, xs), "start_y": start_y,
        "target_y": [float(v) for v in TARGETS[settings.target](xs).reshape(-1)],
    }


def _plain_unit(experiment: str, seed: int, setting: str, value, build: Callable[[], nn.Module], n: int, lr: float,
                steps: int, batch: int | None, settings: LazySettings, scale: float | None = None) -> dict:
    x, y = points(n, seed, settings.target, settings.noise)
    model = _seeded(build, seed)
    if scale is not None:
        center_and_scale(model, scale)
    start_y = _outputs(model, fit_grid(model))
    rows = train(model, x, y, lr=lr, steps=steps, batch_size=batch, checkpoints=settings.checkpoints, seed=seed,
                 decay_to_init=settings.decay_to_init)
    return _result(experiment, seed, setting, value, model, x, y, rows, settings, start_y,
                   lr=lr, steps=steps, batch=min(batch or n, n))


Unit = tuple[str, Callable[[], dict]]


def widths(settings: LazySettings) -> list[Unit]:
    """ShallowMLP at each of WIDTHS, 15 points, full batch, lr 0.002, 50,000 steps; per seed."""
    steps = settings.steps or 50_000
    return [(f"widths-h{h}-seed{s}",
             lambda h=h, s=s: _plain_unit("widths", s, "width", h, lambda: ShallowMLP(h), 15, 0.002, steps, None,
                                          settings))
            for s in settings.seeds for h in WIDTHS]


def alpha(settings: LazySettings) -> list[Unit]:
    """DeepMLP(8) scaled by each of ALPHAS at lr 0.01 / alpha^2, 10 points, full batch, 10,000 steps; the alphas of
    a seed share its base network (the same seeded initialisation)."""
    steps = settings.steps or 10_000
    return [(f"alpha-a{a}-seed{s}",
             lambda a=a, s=s: _plain_unit("alpha", s, "alpha", a, lambda: DeepMLP(8), 10, 0.01 / a ** 2, steps, None,
                                          settings, scale=float(a)))
            for s in settings.seeds for a in ALPHAS]


def random_features(settings: LazySettings) -> list[Unit]:
    """SineFeatures at each feature_dim of FEATURE_DIMS with its steps and lr, 15 points, batch 15."""
    return [(f"random-features-d{d}-seed{s}",
             lambda d=d, s=s, lr=lr, n=n: _plain_unit("random-features", s, "feature_dim", d, lambda: SineFeatures(d),
                                                      15, lr, settings.steps or n, 15, settings))
            for s in settings.seeds for d, (n, lr) in FEATURE_DIMS.items()]


BAD_STEPS, BAD_LR, BAD_WIDTH = 2, 1.0, 100


def _bad_init_unit(seed: int, bad: bool, settings: LazySettings) -> dict:
    steps, lr, n = settings.steps or 1_000, 0.001, 15
    x, y = points(n, seed, settings.target, settings.noise)
    model = _seeded(lambda: ShallowMLP(BAD_WIDTH), seed)
    origin = Movement(model)
    init_y = _outputs(model, fit_grid())
    bad_rows = []
    if bad:
        # the bad initialisation: full-batch steps at lr 1, no decay (their rows are kept apart)
        bad_rows = train(model, x, y, lr=BAD_LR, steps=BAD_STEPS, checkpoints=BAD_STEPS)
    start_y = _outputs(model, fit_grid())
    rows = train(model, x, y, lr=lr, steps=steps, checkpoints=settings.checkpoints, seed=seed,
                 decay_to_init=settings.decay_to_init, origin=origin)
    return _result("bad-init", seed, "init", "bad" if bad else "good", model, x, y, rows, settings, start_y,
                   width=BAD_WIDTH, lr=lr, steps=steps, batch=n, init_y=init_y,
                   bad_steps=BAD_STEPS if bad else 0, bad_lr=BAD_LR if bad else None, bad_rows=bad_rows)


def bad_init(settings: LazySettings) -> list[Unit]:
    """ShallowMLP(100) after 2 full-batch steps at lr 1 ("bad"), and the same network from its default
    initialisation ("good"), each trained 1,000 full-batch steps at lr 0.001 on 15 points; movement is measured
    from where the 1,000 steps start ("movement") and from the very first initialisation ("..._from_init")."""
    return [(f"bad-init-{kind}-seed{s}", lambda s=s, kind=kind: _bad_init_unit(s, kind == "bad", settings))
            for s in settings.seeds for kind in ("good", "bad")]


EXPERIMENTS: dict[str, Callable[[LazySettings], list[Unit]]] = {
    "widths": widths, "alpha": alpha, "random-features": random_features, "bad-init": bad_init,
}


def units(settings: LazySettings) -> list[Unit]:
    """The (key, compute) pairs of the settings' experiment: compute() trains one network and returns its unit."""
    settings.validate()
    return EXPERIMENTS[settings.experiment](settings)


def setting_of(unit: dict) -> tuple[str, object]:
    """(name, value) of what a unit's experiment varies: ("width", 100), ("alpha", 1000), ("feature_dim", 8),
    ("init", "bad")."""
    return unit["setting"], unit[unit["setting"]]


# --- the movement exponent -----------------------------------------------------------------------------------
def exponent(units: list[dict], by: str) -> dict:
    """The exponent of final movement against `by` ("width" or "alpha"): per seed, the least-squares slope of
    log(final movement) on log(by) over that seed's units (those with 2 or more distinct values of `by` and a
    finite, positive movement), for the last weight matrix ("last_layer") and all parameters together
    ("network"); then the mean slope over seeds and its interval (rankprune.analysis.mean_interval).

    Returns {"by", "last_layer": {...}, "network": {...}}, each {"slope" (the mean, nan without seeds), "low",
    "high", "how", "seeds" (how many), "per_seed": [{"seed", "slope", "intercept", "points"}]}."""
    if by not in ("width", "alpha"):
        raise ValueError(f"exponent is by width or alpha, not {by!r}")
    mine = [u for u in units if by in u and u.get("final")]
    out: dict = {"by": by}
    for name, pick in (("last_layer", lambda f: (f.get("movement") or [math.nan])[-1]),
                       ("network", lambda f: f.get("movement_network", math.nan))):
        per_seed = []
        for seed in sorted({u["seed"] for u in mine}):
            pts = [(float(u[by]), pick(u["final"])) for u in mine if u["seed"] == seed]
            pts = [(a, m) for a, m in pts if m is not None and math.isfinite(m) and m > 0 and a > 0]
            if len({a for a, _ in pts}) < 2:
                continue
            lx, ly = np.log([a for a, _ in pts]), np.log([m for _, m in pts])
            slope, intercept = np.polyfit(lx, ly, 1)
            per_seed.append({"seed": seed, "slope": float(slope), "intercept": float(intercept), "points": len(pts)})
        slopes = [p["slope"] for p in per_seed]
        low, high, how = mean_interval(slopes, units="seeds")
        out[name] = {"slope": float(np.mean(slopes)) if slopes else math.nan, "low": low, "high": high, "how": how,
                     "seeds": len(slopes), "per_seed": per_seed}
    return out
