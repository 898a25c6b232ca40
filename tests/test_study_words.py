"""A study's conclusions are written by code from its numbers: the words change when the numbers do."""
from __future__ import annotations

from types import SimpleNamespace

import pandas as pd
import pytest

from helpers import proxy, studies as S, words


def _result(means: dict[float, list[float]], full: dict | None = None) -> S.StudyResult:
    """A finished lr study with these per-seed accuracies, concluded by the study's own rule."""
    rows = pd.DataFrame([{"lr": lr, "n_seeds": len(a), "seeds": list(range(len(a))), "val_acc": a,
                          "val_acc_mean": sum(a) / len(a), "val_acc_std": pd.Series(a).std(ddof=1),
                          "diverged": 0, "failed": sum(v < S.COLLAPSED for v in a), "state": "complete"}
                         for lr, a in means.items()])
    best, close, noise = S.conclude(rows, ["lr"])
    settings = SimpleNamespace(grid={"lr": list(means)}, notebook="04_lr_sweep", budget="default")
    return S.StudyResult(settings, "test", rows, "20 epochs", best, close, noise, 0.0, full=full)


def test_verdict_names_the_points_within_noise_and_those_that_failed():
    r = _result({0.01: [0.950, 0.951, 0.949], 0.1: [0.962, 0.960, 0.961], 0.3: [0.961, 0.959, 0.962],
                 0.5: [0.11, 0.11, 0.12]})
    text = words.verdict(r)
    assert "**Best by mean:** peak lr 0.1" in text
    assert "Within noise of the best" in text and "peak lr 0.3" in text.split("Within noise")[1].split("\n")[0]
    assert "peak lr 0.01" not in text.split("Within noise")[1].split("\n")[0]
    assert "Failed to train" in text and "peak lr 0.5 (3 of 3 seeds" in text
    assert "1 point failed to train" in words.conclusion(r)


def test_a_clear_winner_is_called_one():
    r = _result({0.01: [0.90, 0.901, 0.899], 0.1: [0.96, 0.961, 0.959]})
    assert "No other point is within noise" in words.verdict(r)
    assert f"more than {S.NOISE_Z:g} standard errors below it" in words.conclusion(r)


def _full(gap: float, within: bool | None, by_seed: float = 0.8, ceiling: float = 0.8) -> dict:
    c = {"mean": ceiling, "min": ceiling - 0.05, "max": ceiling + 0.05, "pairs": 3}
    b = {"mean": by_seed, "min": by_seed, "max": by_seed, "pairs": 9}
    return {"full_best": {"lr": 0.1, "val_acc_mean": 0.98, "n_seeds": 3}, "full_seeds": [0, 1, 2],
            "pick_full_mean": 0.98 - gap, "pick_full_rank": 2, "n_full": 9, "n_points": 9, "gap": gap, "se": 0.0005,
            "within_noise": within, "spearman": 0.9, "ceiling": c, "by_seed": b, "n_top": 9, "spearman_top": 0.9,
            "ceiling_top": c, "by_seed_top": b, "full_top_untrained": []}


@pytest.mark.parametrize("within,word", [(True, "within noise"), (False, "outside noise")])
def test_the_full_budget_verdict_follows_the_gap(within, word):
    r = _result({0.01: [0.95, 0.951], 0.1: [0.96, 0.961]}, full=_full(0.0005 if within else 0.01, within))
    assert f"{word} of the full best" in words.conclusion(r)
    assert ("answers the seed's question" in words.conclusion(r)) == within


def test_without_a_noise_estimate_the_full_budget_verdict_says_so():
    r = _result({0.01: [0.95, 0.951], 0.1: [0.96, 0.961]}, full=_full(0.01, None))
    assert "no estimate of the noise" in words.verdict_full(r)
    assert "outside noise" not in words.conclusion(r) and "cannot be judged" in words.conclusion(r)


@pytest.mark.parametrize("by_seed,word", [(0.85, "no worse than two full-budget seeds agree"),
                                          (0.77, "within the range that two full-budget seeds span"),
                                          (0.3, "less well than any two full-budget seeds agree")])
def test_rank_agreement_is_judged_seed_by_seed_against_its_noise_ceiling(by_seed, word):
    r = _result({0.01: [0.95, 0.951], 0.1: [0.96, 0.961]}, full=_full(0.0, True, by_seed, 0.8))
    assert word in words.verdict_full(r)


def test_seed_agreement_compares_single_seeds_across_budgets():
    mine = pd.DataFrame({"lr": [0.1, 0.2, 0.3, 0.4], "seeds": [[0, 1]] * 4,
                         "val_acc": [[0.1, 0.1], [0.2, 0.2], [0.3, 0.3], [0.4, 0.4]]})
    full = mine.assign(val_acc=[[0.4, 0.1], [0.3, 0.2], [0.2, 0.3], [0.1, 0.4]])
    both = proxy.seed_agreement(mine, full, ["lr"])
    assert both["pairs"] == 4 and both["min"] == pytest.approx(-1.0) and both["max"] == pytest.approx(1.0)


def test_seed_ceiling_is_the_rank_agreement_between_seeds():
    agree = pd.DataFrame({"seeds": [[0, 1]] * 4, "val_acc": [[0.1, 0.1], [0.2, 0.2], [0.3, 0.3], [0.4, 0.4]]})
    assert proxy.seed_ceiling(agree)["mean"] == pytest.approx(1.0)
    reversed_ = pd.DataFrame({"seeds": [[0, 1]] * 4, "val_acc": [[0.1, 0.4], [0.2, 0.3], [0.3, 0.2], [0.4, 0.1]]})
    assert proxy.seed_ceiling(reversed_)["mean"] == pytest.approx(-1.0)
    assert proxy.seed_ceiling(pd.DataFrame({"seeds": [[0]] * 4, "val_acc": [[0.1], [0.2], [0.3], [0.4]]})) is None
    # a point missing one seed leaves the other pairs of seeds their points
    gappy = pd.DataFrame({"seeds": [[0, 1, 2]] * 3 + [[0, 1]], "val_acc": [[0.1] * 3, [0.2] * 3, [0.3] * 3, [0.4] * 2]})
    assert proxy.seed_ceiling(gappy)["pairs"] == 3
