"""A run folder's name (the hash of its settings) does not change when a config field with a default appears: every
field added since folders were first named is listed in runfolder.ADDED_WITH_DEFAULT with the value that means what
runs before it did, and left out of the hash at that value. This test fails for a new field that is not listed."""

from __future__ import annotations

import copy

import pytest

from rankprune.config import RunConfig
from rankprune.runfolder import ADDED_WITH_DEFAULT, RESUMABLE, config_key

# The settings every folder name hashes (with format_version 5): a new field belongs in ADDED_WITH_DEFAULT, not here.
HASHED = {
    "data": {"classes", "classes_seed", "dataset", "label_noise", "noise", "points", "task_samples", "task_sampling",
             "tasks", "train_fraction", "val_fraction", "validation"},
    "evolve": {"drop_test", "drop_z", "layers", "max_drop", "rebuild", "rebuild_samples", "wd_decay", "width_tol"},
    "model": {"alpha", "family", "params", "width"},
    "probes": {"hessian_full_max", "hessian_samples", "hessian_top", "movement"},
    "rank": {"measure", "min_width", "source"},
    "train": {"batch_size", "loss", "lr", "lr_drop_factor", "lr_drops", "max_epochs", "min_delta", "momentum",
              "optimizer", "patience", "precision", "rank_tol", "samples_per_epoch", "saturate", "weight_decay"},
}


def _fields() -> set[tuple[str, str]]:
    d = RunConfig().to_dict()
    return {(section, key) for section, part in d.items() if isinstance(part, dict) for key in part}


def test_every_field_is_hashed_resumable_or_added_with_its_default():
    new = _fields() - {(s, k) for s, keys in HASHED.items() for k in keys} - set(RESUMABLE)
    unlisted = sorted(new - set(ADDED_WITH_DEFAULT))
    assert not unlisted, (f"config fields {unlisted} would change every run folder's name: add each to "
                          "runfolder.ADDED_WITH_DEFAULT with the value that means what runs before it did")


@pytest.mark.parametrize(("section", "key"), sorted(ADDED_WITH_DEFAULT))
def test_a_field_added_with_its_default_leaves_the_name_as_it_was(section, key):
    config = RunConfig().validate().resolved().to_dict()
    assert config[section][key] == ADDED_WITH_DEFAULT[(section, key)]  # the default is what older runs meant
    before = copy.deepcopy(config)
    del before[section][key]  # a config written before the field existed
    assert config_key(before) == config_key(config)
    changed = copy.deepcopy(config)
    changed[section][key] = {None: 3, False: True}.get(ADDED_WITH_DEFAULT[(section, key)], 3)
    assert config_key(changed) != config_key(config)  # set to something else, it names another folder
