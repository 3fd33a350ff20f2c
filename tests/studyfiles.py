"""The tiny study file the study, CLI, report and PostgreSQL tests share: digits, 2 epochs, widths 8-32."""

from __future__ import annotations

TINY_SPACE = """\
depth = { low = 1, high = 2 }
width = { low = 8, high = 32 }
width_profile = { choices = ["constant", "funnel"] }
"train.lr" = { low = 0.02, high = 0.1, log = true }
"""


def tiny_study_toml(name: str, sampler: str = "random", n_trials: int | None = None, max_epochs: int = 2,
                    objectives: list[tuple[str, str]] | None = None, space: str = TINY_SPACE) -> str:
    """A survey study file; each trial trains for at most `max_epochs` (patience the same)."""
    study = [f'name = "{name}"', 'mode = "survey"', f'sampler = "{sampler}"', "seed = 0"]
    if n_trials is not None:
        study.append(f"n_trials = {n_trials}")
    if objectives:
        study.append("objectives = [\n" + "".join(
            f'    {{ metric = "{m}", direction = "{d}" }},\n' for m, d in objectives) + "]")
    return (
        "[study]\n" + "\n".join(study) + "\n\n"
        '[base.data]\ndataset = "digits"\n\n'
        f"[base.train]\nmax_epochs = {max_epochs}\npatience = {max_epochs}\nlr_drops = 0\n\n"
        '[base.rank]\nmeasure = "numerical:0.2"\n\n'
        "[space]\n" + space
    )
