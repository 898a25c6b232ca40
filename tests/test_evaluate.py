"""Test-set statistics: Wilson intervals, exact McNemar, the final model's report and the words
its conclusions choose. Fake models with fixed answers per digit, so every count is known."""
from __future__ import annotations

import json

import pytest
import torch

from helpers import data, evaluate as E, model as M, store
from helpers.mnist import load_mnist

NORM = data.Normalization()


class Answers(torch.nn.Module):
    """A model whose answer for each digit is fixed: image `i` carries `i` in its first two pixels."""

    def __init__(self, answers: torch.Tensor, seed: int):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # evaluate reads the device from a parameter
        self.answers, self.config = answers, {"seed": seed}

    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        pixels = torch.round((x[:, :2] * NORM.std + NORM.mean) * 255).long()
        return torch.nn.functional.one_hot(self.answers[pixels[:, 0] * 256 + pixels[:, 1]], 10) * 0.9 + 0.01


def indexed_digits(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.zeros(n, 28, 28, dtype=torch.uint8)
    images[:, 0, 0], images[:, 0, 1] = torch.arange(n) // 256, torch.arange(n) % 256
    return images, torch.arange(n) % 10


def wrong_on(labels: torch.Tensor, wrong: set[int], seed: int) -> Answers:
    answers = labels.clone()
    answers[sorted(wrong)] = (labels[sorted(wrong)] + 1) % 10  # every model errs the same way: votes add up
    return Answers(answers, seed)


def final_model(labels, final_wrong, ablation_wrong) -> E.FinalModel:
    members = [wrong_on(labels, w, s) for s, w in enumerate(final_wrong)]
    ablation = [wrong_on(labels, w, 10 + s) for s, w in enumerate(ablation_wrong)]
    return E.FinalModel(M.Ensemble(members), NORM, members, ablation, {"data": {"source": "mnist"}})


# --- the statistics -------------------------------------------------------------------------------

def test_wilson_matches_published_intervals():
    # Newcombe (1998), Statistics in Medicine 17:857, table I, method 3.
    assert E.wilson(81, 263) == pytest.approx((0.2553, 0.3662), abs=5e-5)
    assert E.wilson(15, 148) == pytest.approx((0.0624, 0.1605), abs=5e-5)
    assert E.wilson(0, 20) == pytest.approx((0.0, 0.1611), abs=5e-5)
    # The score interval's closed form, at the size of the test set.
    k, n, z = 9920, 10000, 1.959964
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * (p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5 / (1 + z * z / n)
    assert E.wilson(k, n) == pytest.approx((centre - half, centre + half), abs=1e-7)


def test_mcnemar_counts_the_digits_that_separate_two_models():
    a = torch.tensor([True] * 10 + [False] * 2 + [True] * 8 + [False] * 5)
    b = torch.tensor([False] * 2 + [True] * 8 + [True] * 2 + [True] * 8 + [False] * 5)
    assert E.mcnemar(a, b) == {"a_only": 2, "b_only": 2, "p_value": 1.0}
    a = [True, True] + [False] * 8 + [True] * 30
    b = [False, False] + [True] * 8 + [True] * 30
    result = E.mcnemar(a, b)
    assert (result["a_only"], result["b_only"]) == (2, 8)
    assert result["p_value"] == pytest.approx(2 * (1 + 10 + 45) / 2 ** 10)  # two-sided, 2 of 10 at 1/2
    assert E.mcnemar(b, a) == {"a_only": 8, "b_only": 2, "p_value": result["p_value"]}
    assert E.mcnemar(a, a) == {"a_only": 0, "b_only": 0, "p_value": 1.0}
    with pytest.raises(ValueError, match="shapes"):
        E.mcnemar(a, a[:-1])


def test_sample_is_seeded_random_and_spread_over_the_set():
    first = E.sample(10000, 500, seed=0)
    assert torch.equal(first, E.sample(10000, 500, seed=0)) and not torch.equal(first, E.sample(10000, 500, seed=1))
    assert len(first.unique()) == 500 and torch.equal(first, first.sort().values)
    assert first.max() > 9000 and not torch.equal(first, torch.arange(500))  # not the first 500
    assert torch.equal(E.sample(300, None, seed=0), torch.arange(300))
    assert torch.equal(E.sample(300, 1000, seed=0), torch.arange(300))


# --- the final model on the test set -------------------------------------------------------------

def test_report_of_seeds_ensemble_ablation_and_paired_tests():
    images, labels = indexed_digits(20)
    final = final_model(labels, [{0, 1}, {2, 3}, {0, 4, 5}], [{6, 7, 8, 9}, {6, 7, 8, 9, 0}, {6, 7, 8, 9}])
    results = E.evaluate_final(final, images, labels)
    r = results.record
    assert [s["seed"] for s in r["per_seed"]] == [0, 1, 2]
    assert [s["accuracy"] for s in r["per_seed"]] == [0.9, 0.9, 0.85]
    assert r["per_seed"][2]["wilson"] == pytest.approx(E.wilson(17, 20))
    assert r["test_accuracy_mean"] == pytest.approx(2.65 / 3) and r["n_seeds"] == 3 and r["n_test"] == 20
    assert r["test_accuracy_std"] == pytest.approx(torch.tensor([0.9, 0.9, 0.85]).std().item())
    assert r["ensemble_test_accuracy"] == 0.95  # the majority is wrong on digit 0 only
    assert r["wilson"]["ensemble"] == pytest.approx(E.wilson(19, 20))
    # the true class's averaged probability: 0.91 where all three are right, 0.61 where one errs, 0.31 where two do
    true_class = torch.tensor([0.91] * 14 + [0.61] * 5 + [0.31])
    assert r["ensemble_test_loss"] == pytest.approx(-true_class.log().mean().item(), rel=1e-5)
    assert [(t["seed"], t["a_only"], t["b_only"]) for t in r["mcnemar"]["ensemble_vs_seed"]] == [(0, 1, 0), (1, 2, 1),
                                                                                                (2, 2, 0)]
    versus = r["mcnemar"]["final_vs_ablation"]
    assert (versus["a_only"], versus["b_only"]) == (4, 1) and versus["p_value"] == pytest.approx(12 / 32)
    assert r["ablation"]["n_seeds"] == 3 and r["ablation"]["ensemble_test_accuracy"] == 0.8
    assert [s["seed"] for s in r["ablation"]["per_seed"]] == [10, 11, 12]
    assert torch.equal(results.preds, final.model.predict(data.normalize(images, NORM)))
    assert list(results.table["model"]) == ["seed 0", "seed 1", "seed 2", "mean ± std of 3 seeds",
                                            "ensemble of the seeds", "without augmentation: mean ± std of 3 seeds",
                                            "without augmentation: ensemble of the seeds"]
    assert list(results.table.columns) == ["model", "test accuracy (%)", "95% Wilson interval (%)", "test loss"]
    mean_row = f"{100 * r['test_accuracy_mean']:.2f} ± {100 * r['test_accuracy_std']:.2f}"
    assert results.table.loc[3, "test accuracy (%)"] == mean_row


def test_conclusion_words_follow_the_numbers(tmp_path):
    images, labels = indexed_digits(20)
    close = E.evaluate_final(final_model(labels, [{0, 1}, {2, 3}, {0, 4, 5}], [{6, 7, 8, 9}] * 3), images, labels)
    text = E.conclusion(close)
    assert "against every seed, the difference is within what 20 digits can resolve" in text
    assert "the final model is ahead" not in text and "the ensemble is ahead" not in text
    assert f"{100 * close.record['test_accuracy_mean']:.2f} ± {100 * close.record['test_accuracy_std']:.2f} %" in text
    assert "1 vs 0 for seed 0" in text and "2 vs 1 for seed 1" in text
    assert "measures ensembling" not in text and "Not a clean estimate" not in text

    images, labels = indexed_digits(400)
    seeds_err = [set(range(20 * s, 20 * s + 20)) for s in range(3)]  # each seed alone on its 20: the votes fix them
    far = E.evaluate_final(final_model(labels, seeds_err, [set(range(200, 240))]), images, labels)
    text = E.conclusion(far)
    assert "against every seed, the ensemble is ahead by more than the test set's sampling noise explains" in text
    assert "the final model is ahead by more than the test set's sampling noise explains" in text
    assert "The ablation has 1 seed against the final model's 3, so this comparison measures ensembling" in text
    assert "within what" not in text and "so the test set's size, not the seed, limits" in text

    # The conclusion reads the saved record as well (tuples become lists in JSON).
    path = store.save_json(tmp_path / "07.json", far.record)
    assert E.conclusion(json.loads(path.read_text())) == text

    spread = E.evaluate_final(final_model(labels, [set(), set(range(40)), set(range(80))], [set()] * 3), images, labels)
    text = E.conclusion(spread)  # std 10 points, standard error 1.5
    assert "no larger than the seed spread" in text and "not the seed, limits" not in text


def test_conclusion_of_one_seed_without_ablation_says_there_is_no_spread():
    images, labels = indexed_digits(20)
    final = final_model(labels, [{0}], [])
    final.meta["data"]["source"] = "kaggle"
    text = E.conclusion(E.evaluate_final(final, images, labels))
    assert "With one seed" in text and "no seed spread" in text and "No ablation" in text
    assert "**not a clean estimate:** its digits are not at hand to check" in text


def test_a_csv_trained_model_is_a_clean_estimate_only_when_no_test_digit_is_among_its_digits():
    images, labels = indexed_digits(40)
    final = final_model(labels, [{0}], [])
    parameters = {"source": "train.csv", "val_fraction": 0.5}
    final.meta["data"] = parameters
    # 01's prepared digits: 30 digits unlike any test digit, then 3 of the test digits
    others = torch.full((30, 28, 28), 7, dtype=torch.uint8)
    others[:, 5, 5] = torch.arange(30, dtype=torch.uint8)
    for known, seen in ((others, 0), (torch.cat([others, images[[4, 9, 30]]]), 3)):
        n = len(known)
        data.save_prepared(data.Prepared(known, torch.arange(n) % 10, torch.arange(n // 2), torch.arange(n // 2, n),
                                         "train.csv", parameters, NORM))
        r = E.evaluate_final(final, images, labels).record
        assert (r["test_digits_seen"], r["clean_test_estimate"]) == (seen, seen == 0)
        text = E.conclusion(r)
        assert ("still a clean estimate" in text) == (seen == 0)
        assert ("**not a clean estimate:** 3 of these test digits are among its digits" in text) == (seen == 3)
    # prepared data that is not the model's own cannot vouch for it
    final.meta["data"] = {**parameters, "val_fraction": 0.1}
    assert E.evaluate_final(final, images, labels).record["test_digits_seen"] is None


# --- photos and re-drawn digits -------------------------------------------------------------------

def photo_result(n, clean, photo, a_only, b_only, p_value, no_digit_found=0):
    return {"n": n, "clean": clean, "photo": photo, "no_digit_found": no_digit_found,
            "wilson": {"clean": E.wilson(round(clean * n), n), "photo": E.wilson(round(photo * n), n)},
            "mcnemar": {"a_only": a_only, "b_only": b_only, "p_value": p_value}}


def test_photo_conclusion_says_as_well_as_only_when_the_sample_can():
    tight = E.photo_conclusion(photo_result(2000, 0.993, 0.9925, 4, 3, 1.0))
    assert "as well as clean renderings: no difference shows" in tight and "2,000 test digits" in tight
    small = E.photo_conclusion(photo_result(40, 1.0, 1.0, 0, 0, 1.0))
    assert "cannot rule out" in small and "as well as clean renderings:" not in small
    p = E.mcnemar([1] * 22 + [0] * 2, [0] * 22 + [1] * 2)["p_value"]
    worse = E.photo_conclusion(photo_result(2000, 0.993, 0.983, 22, 2, p, no_digit_found=5))
    assert "read worse than clean renderings" in worse and "in 5 of the photos no digit was found" in worse
    assert "as well as" not in worse


class Constant(torch.nn.Module):
    def __init__(self, digit: int):
        super().__init__()
        self.anchor, self.digit = torch.nn.Parameter(torch.zeros(1)), digit

    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.one_hot(torch.full((len(x),), self.digit), 10).float()


def test_photos_and_rendered_digits_on_a_random_sample(mnist_raw):
    images, labels = load_mnist("test", data_dir=mnist_raw, progress=False)
    model = Constant(1)
    photo = E.photo_accuracy(model, NORM, images, labels, n=40, seed=3)
    drawn = E.sample(len(images), 40, 3)
    assert photo["n"] == 40 and photo["clean"] == int((labels[drawn] == 1).sum()) / 40
    assert photo["wilson"]["clean"] == pytest.approx(E.wilson(round(40 * photo["clean"]), 40))
    assert photo["mcnemar"]["b_only"] == 0  # the same answer everywhere: a photo can only lose digits it did not find
    assert sum(b["n"] for b in photo["by_paper"]) == 40
    assert list(E.photo_table(photo)["digits"]) == [40] + [b["n"] for b in photo["by_paper"]]
    rendered = E.rendered_accuracy(model, NORM, images, labels, n=10, seed=3, sizes=(28, 56))
    assert [v["version"] for v in rendered["versions"]] == ["original", "28px", "28px, cropped to its ink", "56px",
                                                            "56px, cropped to its ink"]
    assert all(v["mcnemar"] == {"a_only": 0, "b_only": 0, "p_value": 1.0} for v in rendered["versions"][1:])
    assert len(E.rendered_table(rendered)) == 5


def test_the_models_beyond_the_budget_are_tested_as_the_final_model_and_set_in_context(tmp_path):
    from helpers import final as F
    from helpers.quoted import LITERATURE, QUOTED

    images, labels = indexed_digits(300)
    final = E.evaluate_final(final_model(labels, [{0, 1}, {2}, set()], [set(range(30))] * 2), images, labels)
    rows = []
    for name, config, seeds in (("wide", {"hidden": [8]}, [0, 1]), ("convnet", {"hidden": [], "conv": [2]}, [0, 1])):
        names = [f"{name}_seed{s}.pt" for s in seeds]
        for s, file in zip(seeds, names):
            M.save_checkpoint(F.beyond_folder() / file, M.MLP(**config, dropout=[0.1] * len(config["hidden"]), seed=s)
                              .half(), NORM, seed=s)
        rows.append({"recipe": name, **config, "epochs": 3, "checkpoints": names, "val_acc_mean": 0.5,
                     "val_acc_std": 0.01, "seconds_per_seed": 100.0, "machine_seconds_per_seed": 50.0})
    store.save_json(F.beyond_path(), {"rows": rows, "long": "wide"})
    beyond = E.beyond(final, images, labels)
    assert [(b["recipe"], b["kind"], b["n_seeds"]) for b in beyond] == [("wide", "long", 2), ("convnet", "convnet", 2)]
    for b, row in zip(beyond, rows):
        models = [M.load_checkpoint(F.beyond_folder() / c)[0] for c in row["checkpoints"]]
        correct = [(m.predict(data.normalize(images, NORM)) == labels).float().mean().item() for m in models]
        assert b["test_accuracy_mean"] == pytest.approx(sum(correct) / 2)
        ensemble = torch.stack([E.predict_all(m, images, NORM) for m in models]).mean(0).argmax(1) == labels
        assert b["versus_final"]["a_only"] == int((ensemble & (final.preds != labels)).sum())
        assert b["versus_final"]["b_only"] == int((~ensemble & (final.preds == labels)).sum())
    record = {**final.record, "recipe": {"hidden": [512, 256], "epochs": 30}, "beyond": beyond}
    table = E.context_table(record)
    assert list(table["test accuracy (%)"][:len(LITERATURE)]) == [k.rstrip("%") for k, _, _ in LITERATURE]
    assert all(k in QUOTED for k, _, _ in LITERATURE)
    # the final model, its ablation, the long MLP and the convnet: each a mean and an ensemble
    assert len(table) == len(LITERATURE) + 8 and table["model"][len(LITERATURE)].startswith("final model (512-256 MLP, 30 epochs)")
    text = E.context_conclusion(record)
    assert "The target of a 99.35 % test mean is not reached (short by" in text
    assert "is reached." in E.context_conclusion(record, target=0.0) and text.count("Its ensemble against") == 2
    assert "make compare-recipes" in E.context_conclusion({**record, "beyond": None})
