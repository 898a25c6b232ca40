"""The final model's recipes: settings, training a seed, comparing recipes, choosing one."""
from __future__ import annotations

import pytest
import torch

from helpers import data, final

try:
    from .conftest import synthetic_digits
except ImportError:
    from conftest import synthetic_digits


def test_every_recipe_is_complete_and_has_an_unaugmented_twin():
    for name in final.RECIPES:
        s = final.settings(name)
        assert {"hidden", "dropout", "epochs", "augment", "lr", "batch_size", "nesterov"} <= set(s)
        assert len(s["dropout"]) == len(s["hidden"])
        twin = final.without_augmentation(name)
        assert twin["augment"] is None and {k: v for k, v in twin.items() if k != "augment"} == \
            {k: v for k, v in s.items() if k != "augment"}
    assert isinstance(final.augmenter({"shift": 2}, data.Normalization()), data.RandomShift)
    assert isinstance(final.augmenter({"rotate": 5, "scale": 0.0, "shift": 1, "elastic": 1.0}, data.Normalization()),
                      data.RandomAffine)
    assert final.augmenter(None, data.Normalization()) is None


def test_a_seed_of_a_recipe_trains_reproducibly():
    images, labels = synthetic_digits(400)
    train_idx, val_idx = data.split_indices(labels, 0.25, 0)
    prepared = data.Prepared(images, labels, train_idx, val_idx, "synthetic")
    recipe = {**final.settings(next(iter(final.RECIPES))), "hidden": [32], "dropout": [0.1], "epochs": 2,
              "augment": {"rotate": 5, "scale": 0.05, "shift": 1, "elastic": 1.0}}
    torch.set_num_threads(1)
    m1, h1, _ = final.train(prepared, recipe, 3, progress=False, log=lambda s: None)
    m2, h2, _ = final.train(prepared, recipe, 3, progress=False, log=lambda s: None)
    assert len(h1) == 2 and h1[-1]["val_acc"] > 0.5
    assert all(torch.equal(p, q) for p, q in zip(m1.parameters(), m2.parameters()))


def test_choice_is_the_best_mean_among_recipes_fast_enough():
    rows = [{"recipe": "a", "val_acc_mean": 0.990, "machine_seconds_per_seed": 40},
            {"recipe": "b", "val_acc_mean": 0.993, "machine_seconds_per_seed": 120},
            {"recipe": "c", "val_acc_mean": 0.991, "machine_seconds_per_seed": 80}]
    assert final.choose(rows)["recipe"] == "c"
    assert final.choose(rows, max_seconds=200)["recipe"] == "b"
