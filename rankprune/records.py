"""The run folder's format version, and the one place where rows and configs of older formats are upgraded.

    format 1  runs made before config.json carried `format_version`: MLPs only (no model.family), flat
              inputs, no data.json, no starting weights; iteration rows from before the warm rebuild
              also lack `phase` and `decision_acc`
    format 2  config.json has `format_version`; model.family and model.params; data.json with
              input_shape; weights/...-start.pt; depths.json entries name their family and params_requested
    format 3  train.saturate (default rank); older configs saturated by accuracy, and upgrade_config says so
    format 4  (issue 19) settings whose defaults changed meaning; an older config keeps what it ran under
              (upgrade_config): the validation split's origin, the accuracy-drop test, the rank's source
    format 5  (issue 22) data.task_sampling: --tasks draws the experiment's augmented samples; an older config's
              tasks were assigned to the rows of fixed splits, task 0 the identity ("fixed")

RunFolder.rows passes every row through `upgrade_row`, and RunConfig.from_stored reads a config.json of any
format up to FORMAT_VERSION (through `upgrade_config`), so the controller, the report and the API see only the current shapes.
tests/data/run-format-1 is a real format-1 run folder that report and resume are tested on.
"""

from __future__ import annotations

from typing import Any

__all__ = ["FORMAT_VERSION", "upgrade_row", "upgrade_config", "config_format"]

FORMAT_VERSION = 5


def config_format(config: dict[str, Any]) -> int:
    """The format a config.json was written in (1 when it does not say)."""
    return int(config.get("format_version", 1))


def upgrade_row(table: str, row: dict) -> dict:
    """A row of `table` (a run folder's .jsonl file name) with the fields later formats added filled in as the
    older format meant them. Idempotent; a current row comes back unchanged."""
    if table == "iterations.jsonl":
        row.setdefault("phase", "shrink")  # before the warm rebuild's anneal, every iteration shrank
        row.setdefault("decision_acc", row.get("val_acc"))  # and was judged by its last epoch
        if "train_acc_relabelled" in row:  # memorisation was scored on every drawn row, changed or not
            row.setdefault("relabelled_rows", "all")
    return row


def upgrade_config(config: dict[str, Any]) -> dict[str, Any]:
    """A config.json of any format with the settings later formats added filled in as the older format meant
    them (a default that changed must not silently change an old run's meaning on resume or in a report)."""
    if config_format(config) < 3:
        train = dict(config.get("train", {}))
        train.setdefault("saturate", "accuracy")  # training stopped when validation accuracy did, then
        config = {**config, "train": train}
    if config_format(config) < 4:
        config = _set_defaults(config, FORMAT_4_MEANT)
    if config_format(config) < 5:
        config = _set_defaults(config, FORMAT_5_MEANT)
    return config


# What a config of format 3 or older meant by settings format 4 added with another default: (section, key) -> value.
FORMAT_4_MEANT: dict[tuple[str, str], object] = {
    ("data", "validation"): "fraction",  # the validation split was carved from the train fraction
    ("evolve", "drop_test"): "unpaired",  # an accuracy drop was tested with the binomial standard error
    ("rank", "source"): "weights",  # the driving rank was always the incoming weight matrix's
}


# What a config of format 4 or older meant by settings format 5 added.
FORMAT_5_MEANT: dict[tuple[str, str], object] = {
    ("data", "task_sampling"): "fixed",  # --tasks assigned N tasks (task 0 the identity) to the rows of fixed splits
}


def _set_defaults(config: dict[str, Any], defaults: dict[tuple[str, str], object]) -> dict[str, Any]:
    out = dict(config)
    for (section, key), value in defaults.items():
        part = dict(out.get(section, {}))
        part.setdefault(key, value)
        out[section] = part
    return out
