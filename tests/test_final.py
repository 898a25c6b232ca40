"""The final model's recipes: settings, training a seed, choosing one, checking 06's parameters, its conclusion."""
from __future__ import annotations

import json

import pytest
import torch

from helpers import data, final, params as P

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


def _row(name, hidden, epochs, mean, seconds):
    return {"recipe": name, "hidden": hidden, "epochs": epochs, "val_acc_mean": mean,
            "seconds_per_seed": 2 * seconds, "machine_seconds_per_seed": seconds}


def test_choice_is_the_best_mean_within_the_compute_budget_whatever_the_seconds():
    big = [2 * h for h in final.BUDGET["hidden"]]
    rows = [_row("a", final.BUDGET["hidden"], final.BUDGET["epochs"] // 2, 0.990, 40),
            _row("b", big, final.BUDGET["epochs"], 0.995, 120),              # best, but over the budget
            _row("c", final.BUDGET["hidden"], final.BUDGET["epochs"], 0.991, 80),
            _row("d", final.BUDGET["hidden"], final.BUDGET["epochs"] + 1, 0.993, 81)]  # one epoch too many
    assert [final.within_budget(r) for r in rows] == [True, False, True, False]
    assert final.choose(rows)["recipe"] == "c"
    for scale in (0.1, 3.0, 100.0):  # a faster or slower machine
        slower = [{**r, "seconds_per_seed": scale * r["seconds_per_seed"],
                   "machine_seconds_per_seed": scale * r["machine_seconds_per_seed"]} for r in rows]
        assert final.choose(slower)["recipe"] == "c"
    with pytest.raises(ValueError, match="budget"):
        final.choose([rows[1]])


def test_compute_counts_the_weights_times_the_epochs_not_the_batch():
    assert final.compute({"hidden": [10], "epochs": 3}) == 3 * (784 * 10 + 10 * 10)
    name = "512-256, 30 epochs, affine + elastic"
    assert final.compute(name) == final.compute(f"{name}, batch 256")
    assert all(final.within_budget(n) for n in final.RECIPES)


def test_loading_the_comparison_applies_todays_rule_to_its_rows(tmp_path, monkeypatch):
    monkeypatch.setenv("DIGITS_FIGURES_DIR", str(tmp_path))
    assert final.load_comparison() is None
    rows = [_row("slow but best", final.BUDGET["hidden"], final.BUDGET["epochs"], 0.992, 500),
            _row("fast", final.BUDGET["hidden"], 1, 0.98, 5)]
    final.results_path().parent.mkdir(parents=True)
    final.results_path().write_text(json.dumps({"rows": rows, "chosen": "fast"}))  # as a seconds rule chose
    assert final.load_comparison()["chosen"] == "slow but best"


COMPARISON = {"chosen": "512-256, 20 epochs, shifts", "rows": []}


def _plan(**changes):
    parameters = dict(final_recipe="", final_seeds=[0, 1, 2], ablation_seeds=[], final_epochs=0)
    return final.plan(COMPARISON, **{**parameters, **changes})


def test_the_plan_checks_every_final_parameter_by_name():
    p = _plan()
    assert p.recipe == COMPARISON["chosen"] and p.settings == final.settings(p.recipe)
    assert p.seeds == (0, 1, 2) and p.ablation_seeds == p.seeds  # the ablation: as many seeds
    assert "rule" in p.chosen_by
    other = "512-256, 20 epochs, no augmentation"
    p = _plan(final_recipe=other, ablation_seeds=[4, 5], final_epochs=2)
    assert (p.recipe, p.ablation_seeds, p.settings["epochs"]) == (other, (4, 5), 2)
    assert COMPARISON["chosen"] in p.chosen_by and final.RECIPES[other]["epochs"] != 2
    assert final.plan(None, final_recipe="", final_seeds=[0], ablation_seeds=[], final_epochs=0).recipe \
        == next(iter(final.RECIPES))
    for changes, name in [({"final_recipe": "512-256, 20 epochs, shift"}, "final_recipe"),
                          ({"final_recipe": None}, "final_recipe"),
                          ({"final_seeds": []}, "final_seeds"), ({"final_seeds": [0, 0]}, "final_seeds"),
                          ({"final_seeds": [-1]}, "final_seeds"), ({"ablation_seeds": [1, "2"]}, "ablation_seeds"),
                          ({"ablation_seeds": "0"}, "ablation_seeds"), ({"final_epochs": -1}, "final_epochs"),
                          ({"final_epochs": 1.5}, "final_epochs")]:
        with pytest.raises(P.ParameterError, match=name):
            _plan(**changes)


def _summary(accs, seconds=100.0):
    return {**final.spread(accs), "seconds": [seconds] * len(accs), "machine_seconds": [seconds / 2] * len(accs)}


def _conclusion(final_accs, ablation_accs, **plan_changes):
    summary = {"final": _summary(final_accs), "ablation": _summary(ablation_accs)}
    built = {"plan": _plan(**plan_changes), "summary": summary}
    return final.conclusion(built, COMPARISON)


def test_the_conclusion_chooses_its_words_from_the_numbers():
    clear = _conclusion([0.991, 0.992, 0.993], [0.985, 0.986, 0.987])
    assert "clearly above" in clear and COMPARISON["chosen"] in clear and "rule" in clear
    assert "99.20 ± 0.10 %" in clear and "98.60 ± 0.10 %" in clear and "+0.60 points" in clear
    assert "depend on the machine" in clear and "100 s" in clear
    assert "within noise of" in _conclusion([0.991, 0.992, 0.993], [0.990, 0.992, 0.994])
    assert "clearly below" in _conclusion([0.985, 0.986, 0.987], [0.991, 0.992, 0.993])
    assert "no standard error" in _conclusion([0.99], [0.98])
    assert "agree exactly" in _conclusion([0.99, 0.99], [0.98, 0.98])
    assert "`final_epochs`" in _conclusion([0.99, 0.991], [0.98, 0.981], final_epochs=1)


def test_spread_and_its_text():
    s = final.spread([0.99, 0.992])
    assert s["n_seeds"] == 2 and s["val_acc_mean"] == pytest.approx(0.991)
    assert final.percent(s) == "99.10 ± 0.14 %"
    assert final.spread([0.99])["val_acc_std"] is None and final.percent(final.spread([0.99])) == "99.00 %"


def test_summarize_keeps_the_record_07_reads():
    runs = [{"kind": kind, "seed": s, "val_acc": acc, "seconds": 10.0, "machine_seconds": 5.0}
            for kind, s, acc in [("seed", 0, 0.99), ("seed", 1, 0.992), ("ablation", 0, 0.98), ("ablation", 1, 0.982)]]
    out = final.summarize(runs)
    assert out["final"]["seeds"] == [0, 1] and out["ablation"]["val_acc"] == [0.98, 0.982]
    assert out["final"]["val_acc_mean"] == pytest.approx(0.991) and out["ablation"]["n_seeds"] == 2
    assert out["ablation"]["machine_seconds"] == [5.0, 5.0]


def test_the_recipes_beyond_the_budget_keep_half_precision_checkpoints_that_read_as_trained(small_prepared,
                                                                                          monkeypatch):
    from helpers.model import load_checkpoint, read_checkpoint

    monkeypatch.setattr(final, "BEYOND", {"tiny MLP": dict(hidden=[16], epochs=2, augment=None, batch_size=32),
                                          "tiny convnet": dict(conv=[4, 8], hidden=[], epochs=2, augment=None,
                                                               batch_size=32)})
    data.save_prepared(small_prepared)  # the workers read it, as 06's do
    rows = final.beyond(small_prepared, list(final.BEYOND), [0, 1], workers=2, log=lambda s: None)
    assert [r["recipe"] for r in rows] == ["tiny MLP", "tiny convnet"] and final.long_recipe(rows) is rows[0]
    for row in rows:
        assert row["n_seeds"] == 2 and len(row["checkpoints"]) == 2
        for name, trained, stored in zip(row["checkpoints"], row["val_acc"], row["stored_val_acc"]):
            path = final.beyond_folder() / name
            weights = read_checkpoint(path)["state_dict"]
            assert all(w.dtype == torch.float16 for w in weights.values() if w.is_floating_point())
            model = load_checkpoint(path)[0]
            assert model.config.get("conv", []) == final.BEYOND[row["recipe"]].get("conv", [])
            # rounding the weights to half precision changes no more than a digit or two's answer
            assert abs(stored - trained) <= 2 / len(small_prepared.val_idx)
    convnet = load_checkpoint(final.beyond_folder() / rows[1]["checkpoints"][0])[0]
    assert [type(m).__name__ for m in convnet.net][:4] == ["Unflatten", "Conv2d", "ReLU", "MaxPool2d"]
    # two 5x5 layers (28x28 then 14x14 pixels), then the 8x7x7 features to 10 logits
    assert final.compute({"conv": [4, 8], "hidden": [], "epochs": 1}) == 28 * 28 * 4 * 25 + 14 * 14 * 8 * 4 * 25 + \
        8 * 7 * 7 * 10
    with pytest.raises(P.ParameterError, match="hidden"):
        final.train(small_prepared, {**final.settings("tiny MLP"), "hidden": [], "dropout": []}, 0)
