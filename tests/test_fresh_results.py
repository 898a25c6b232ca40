"""A fresh run's results agree with the committed ones: the same facts, the same accuracies within
seed noise, the same answers within noise.

`make test-notebooks` (`python -m helpers.notebooks nbval`) re-executes the committed notebooks in
a temporary folder and then runs this module with DIGITS_FRESH_FIGURES naming the figures that
run wrote; without it (plain `pytest tests`) the comparisons skip, and the tests at the end check
that the nbval command really runs them and that they can fail.

The tolerances come from the same commit run on two kinds of CPU (shared/notes/cross-machine.md,
committed AMD EPYC vs Intel Xeon): float sums are ordered differently from the first matrix
product on, so after training two machines differ by about what two seeds do, and a pick among
points that are tied within noise can change. Accuracies below are fractions; "points" are
percentage points.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import statistics
import subprocess
from pathlib import Path

import pytest

from helpers import notebooks, paths
from helpers.studies import COLLAPSED, NOISE_Z

FRESH = os.environ.get(notebooks.FRESH_FIGURES_ENV)
COMMITTED = paths.ROOT / "figures"
STUDIES = ["04_lr_sweep", "05_batch_sweep", "06_grid_search"]
# Chance is 0.1. A run that collapses (a rate too high for its batch) ends at one class or a few:
# 0.11 and 0.28 in the committed grid, and where between the two is up to the machine. A point
# counts as collapsed when any of its seeds ends below studies.COLLAPSED, far from both.

needs_fresh = pytest.mark.skipif(
    not FRESH, reason=f"compares a fresh run with the committed JSON: `make test-notebooks` runs it "
                      f"with {notebooks.FRESH_FIGURES_ENV} set")
not_inside_nbval = pytest.mark.skipif(bool(FRESH), reason="checks the nbval command from outside it")


def results(name: str) -> tuple[dict, dict]:
    """The committed and the fresh result `name`."""
    fresh = Path(FRESH) / f"{name}.json"
    assert fresh.exists(), f"the notebooks ran, but wrote no {fresh}"
    return json.loads((COMMITTED / f"{name}.json").read_text()), json.loads(fresh.read_text())


def points(study: dict) -> dict[tuple, dict]:
    names = list(study["parameters"]["grid"])
    return {tuple(row[n] for n in names): row for row in study["rows"]}


def collapsed(row: dict) -> bool:
    """Some seed failed to train, or none finished (a NaN or a missing value counts as failed)."""
    return not row["val_acc"] or not all(acc is not None and acc >= COLLAPSED for acc in row["val_acc"])


def same_facts(committed: dict, fresh: dict) -> dict:
    """The committed fields whose fresh values differ; fields only the fresh result has are new, not wrong."""
    return {k: (v, fresh.get(k, "missing")) for k, v in committed.items() if fresh.get(k, "missing") != v}


def points_apart(a: float, b: float) -> float:
    return 100 * abs(a - b)


def assert_within(what: str, fresh: float, committed: float, tolerance: float) -> None:
    assert points_apart(fresh, committed) <= tolerance, \
        f"{what}: fresh {100 * fresh:.2f}%, committed {100 * committed:.2f}%, over {tolerance} points apart"


@needs_fresh
def test_01_same_digits_and_split():
    committed, fresh = results("01_data")
    assert not same_facts({k: committed[k] for k in ("n_train", "n_val", "class_counts")}, fresh)


@needs_fresh
def test_03_validation_accuracy_within_0_3_points():
    # One seed, same seed on both sides: 98.28 vs 98.37 across CPU kinds (0.09 points). At this
    # length a single run's seed std is near 0.1 points, so 0.3 is about twice the standard error
    # of two independent runs' difference and three times the move measured.
    committed, fresh = results("03_training")
    assert_within("03 validation", fresh["final"]["val_acc"], committed["final"]["val_acc"], 0.3)


@needs_fresh
@pytest.mark.parametrize("name", STUDIES)
def test_study_has_the_same_grid_seeds_data_and_collapsed_points(name):
    committed, fresh = results(name)
    assert fresh["parameters"]["grid"] == committed["parameters"]["grid"]
    assert not same_facts(committed["data"], fresh["data"]), "not the same prepared digits"
    c, f = points(committed), points(fresh)
    assert {p: r["n_seeds"] for p, r in f.items()} == {p: r["n_seeds"] for p, r in c.items()}
    assert sorted(p for p, r in f.items() if collapsed(r)) == sorted(p for p, r in c.items() if collapsed(r))


def pooled_std(rows: list[dict]) -> float | None:
    rows = [r for r in rows if r["n_seeds"] > 1]   # one seed has no spread to pool
    dof = sum(r["n_seeds"] - 1 for r in rows)
    return math.sqrt(sum((r["n_seeds"] - 1) * r["val_acc_std"] ** 2 for r in rows) / dof) if dof else None


def tolerances(study: dict) -> dict[tuple, float]:
    """How far (in points) a fresh mean of each working point may lie from the committed one.

    The difference of two means of n seeds has standard error s·sqrt(2/n), s the seed std. A
    point's own std rests on two or three seeds, so s is pooled: over the working points at or
    above their median (the plateau, where the decisions are, as the study's `noise_std` is),
    and separately over those below (far from the plateau a point varies more: lr 1e-4, still
    climbing at the last epoch, has a seed std of 0.23 points against 0.07 on 04's plateau).
    4 standard errors: a study compares up to 30 points, and at 4 the chance that any of them
    fails by noise alone is under 0.2%; that gives 0.39 points on 05's plateau and 0.42 on 06's
    (two seeds), 0.54 and 0.69 below them. Floor 0.3 points (04's plateau would get 0.23): the
    pool comes from few seeds and can come out low. The study bests moved 0.01 and 0.05 points
    across CPU kinds.
    """
    working = {p: r for p, r in points(study).items() if not collapsed(r)}
    median = statistics.median(r["val_acc_mean"] for r in working.values())
    out = {}
    for plateau in (True, False):
        half = {p: r for p, r in working.items() if (r["val_acc_mean"] >= median) == plateau}
        s = pooled_std(list(half.values()))
        # without a pool (one seed per point), the floor alone
        out |= {p: max(0.3, 100 * 4 * s * math.sqrt(2 / r["n_seeds"])) if s else 0.3 for p, r in half.items()}
    return out


@needs_fresh
@pytest.mark.parametrize("name", STUDIES)
def test_study_points_agree_within_seed_noise(name):
    committed, fresh = results(name)
    c, f = points(committed), points(fresh)
    apart = {p: (round(100 * c[p]["val_acc_mean"], 2), round(100 * f[p]["val_acc_mean"], 2), round(tol, 2))
             for p, tol in tolerances(committed).items()
             if p in f and not collapsed(f[p]) and points_apart(f[p]["val_acc_mean"], c[p]["val_acc_mean"]) > tol}
    assert not apart, f"point: (committed %, fresh %, tolerance in points) {apart}"


@needs_fresh
@pytest.mark.parametrize("name", STUDIES)
def test_study_best_is_within_noise_of_the_committed_best(name):
    # Across CPU kinds 06's best pair changed (0.05/32 -> 0.1/16), both within noise of each other:
    # the fresh pick must be one the committed run could not tell from its best, by the studies'
    # own rule (gap under NOISE_Z standard errors of the committed pooled std).
    committed, fresh = results(name)
    names = list(committed["parameters"]["grid"])
    key = lambda p: tuple(p[n] for n in names)  # noqa: E731
    pick, best = key(fresh["best"]), committed["best"]
    tied = {key(p) for p in committed["indistinguishable"]} | {key(best)}
    if pick in tied:
        return
    if committed["noise_std"] is None:
        pytest.skip("one seed per point: the committed run has no noise to judge a different pick by")
    row = points(committed)[pick]
    se = committed["noise_std"] * math.sqrt(1 / best["n_seeds"] + 1 / row["n_seeds"])
    gap = best["val_acc_mean"] - row["val_acc_mean"]
    assert gap < NOISE_Z * se, \
        f"fresh best {pick} is {100 * gap:.2f} points below the committed best {key(best)} (SE {100 * se:.2f})"


@needs_fresh
def test_final_model_same_recipe_and_validation_within_noise():
    committed, fresh = results("06_grid_search_final")
    assert fresh["parameters"]["recipe"] == committed["parameters"]["recipe"]
    assert not same_facts(committed["parameters"]["settings"], fresh["parameters"]["settings"])
    assert fresh["final"]["n_seeds"] == committed["final"]["n_seeds"]
    # 3 seeds: 99.12 ± 0.02 vs 99.09 ± 0.04 across CPU kinds (0.03 points); the standard error of
    # the difference of two 3-seed means at std 0.04 is 0.03, so 0.15 is five of them.
    assert_within("final model, validation mean", fresh["final"]["val_acc_mean"], committed["final"]["val_acc_mean"], 0.15)
    # The ablation (no augmentation): one seed moved 0.17 points across CPU kinds; 0.4 is over
    # twice that (more seeds only bring the means closer).
    assert_within("ablation, validation mean", fresh["ablation"]["val_acc_mean"], committed["ablation"]["val_acc_mean"], 0.4)


@needs_fresh
def test_test_accuracy_within_noise_and_at_least_99_percent():
    committed, fresh = results("07_test_eval")
    assert fresh["n_seeds"] == committed["n_seeds"]
    assert [s["n"] for s in fresh["per_seed"]] == [s["n"] for s in committed["per_seed"]]
    assert not same_facts(committed["model"], fresh["model"])
    # Test mean over 3 seeds: 99.19 ± 0.02 vs 99.12 ± 0.03 across CPU kinds (0.07 points): 0.15 is
    # twice the move measured, and five standard errors of the seed spread.
    assert_within("test mean", fresh["test_accuracy_mean"], committed["test_accuracy_mean"], 0.15)
    assert fresh["test_accuracy_mean"] >= 0.99, f"test mean {100 * fresh['test_accuracy_mean']:.2f}% is under 99%"
    # The ensemble, one number on the same 10,000 digits: 99.23 vs 99.19 (0.04 points). Its
    # binomial standard error (0.09 points) is mostly shared between the two runs, which score the
    # same digits; 0.2 is five times the move measured.
    assert_within("ensemble, test", fresh["ensemble_test_accuracy"], committed["ensemble_test_accuracy"], 0.2)


# ------------------------------------------------------- the nbval command runs this, and it can fail

@not_inside_nbval
def test_nbval_runs_this_test_on_the_fresh_figures_after_the_notebooks_pass(monkeypatch, tmp_path):
    assert notebooks.FRESH_TEST == Path(__file__).resolve()
    monkeypatch.setenv("MNIST_DATA_DIR", str(tmp_path / "mnist"))  # so private_folders leaves it alone
    for nbval_rc in (0, 1):
        calls = []

        def call(cmd, cwd, env):
            calls.append((cmd, env))
            return nbval_rc if len(calls) == 1 else 0

        monkeypatch.setattr(notebooks.subprocess, "call", call)
        assert notebooks.main(["nbval"]) == nbval_rc
        (nbval_cmd, nbval_env), *rest = calls
        assert "--nbval-lax" in nbval_cmd
        if nbval_rc:
            assert not rest, "the results test runs only after the notebooks pass"
            continue
        [(cmd, env)] = rest
        assert str(notebooks.FRESH_TEST) in cmd
        # the folder the re-executed notebooks wrote their figures and JSON to, not the checkout's
        assert env[notebooks.FRESH_FIGURES_ENV] == nbval_env["DIGITS_FIGURES_DIR"]
        assert Path(env[notebooks.FRESH_FIGURES_ENV]) != COMMITTED


@not_inside_nbval
def test_the_results_test_passes_on_the_committed_numbers_and_fails_on_a_changed_one(tmp_path):
    fresh = tmp_path / "figures"
    fresh.mkdir()
    for path in COMMITTED.glob("*.json"):
        shutil.copy(path, fresh)
    cmd, env = notebooks.nbval_commands(tmp_path, ["-rs"])[1]  # -rs: skip reasons in the output

    def run() -> subprocess.CompletedProcess:
        return subprocess.run(cmd, cwd=paths.ROOT, env=env, capture_output=True, text=True, timeout=300)

    same = run()
    assert same.returncode == 0, same.stdout[-3000:] + same.stderr[-2000:]
    assert "compares a fresh run" not in same.stdout, "the comparisons skipped although a fresh folder was given"

    study = json.loads((fresh / "04_lr_sweep.json").read_text())
    study["rows"][4]["val_acc_mean"] += 0.005  # half a point
    (fresh / "04_lr_sweep.json").write_text(json.dumps(study))
    changed = run()
    assert changed.returncode == 1, changed.stdout[-3000:]
    assert "1 failed" in changed.stdout and "test_study_points_agree_within_seed_noise[04_lr_sweep]" in changed.stdout
