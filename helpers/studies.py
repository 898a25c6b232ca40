"""Hyperparameter studies (notebooks 04, 05, 06): what they train, and what they conclude.

    result = studies.run("04_lr_sweep", grid={"lr": [...]}, budget=..., epochs=..., seeds=[...], ...)

checks the parameters (`params.study_settings`, a named record), runs or resumes the study and
returns its result, a row per point. A study trains every point of its grid (learning rates,
batch sizes) for one budget (epochs, share of the training digits) once per seed, and reports
each point as mean +- std over its seeds. It names the best point by mean and the points that
cannot be told apart from it; `helpers.proxy` sets its answer beside the committed full-budget
results, and `helpers.words` says it all in words. The trials run on `helpers.workers`.
"""
from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import optuna
import pandas as pd
from optuna.trial import TrialState

from . import data, paths, proxy, store
from . import params as P
from . import storage as S
from . import workers as W

NOISE_Z = 2.0   # "indistinguishable": the gap to the best is under 2 standard errors (~95%)
# A seed that ends below this validation accuracy failed to train: working models of this size pass
# 0.9 within an epoch, and a collapsed one predicts one class (0.11) or little better.
COLLAPSED = 0.5
# What 04, 05 and 06 vary. Every task names both, and a study is named by the rest of its settings
# and its data, so the three notebooks share one study wherever their settings agree: 06's lr 0.1 at
# batch 64 is 04's lr 0.1, trained once, whichever notebook asks first.
VARIED = ("lr", "batch_size")


@dataclass
class StudyResult:
    """What a study found: `table` has a row per point (see `point_rows`)."""

    settings: P.StudySettings
    study_name: str
    table: pd.DataFrame
    final: str                             # its budget's label ("20 epochs", "20 epochs on 25% of the digits")
    best: dict
    indistinguishable: list[dict]
    noise_std: float | None                # pooled seed-to-seed std of val_acc at the final budget
    seconds: float
    full: dict | None = None               # comparison with the committed full-budget results
    path: Path | None = None
    extra: dict = field(default_factory=dict)

    def figure(self, name: str) -> str:
        """Where `plots.save` puts this study's figure `name`: full-budget ones go to figures/full/."""
        return f"full/{name}" if self.settings.budget == "full" else name


def budget_label(epochs: int, fraction: float) -> str:
    return f"{epochs} epoch{'s' if epochs != 1 else ''}" + ("" if fraction >= 1 else f" on {fraction:.0%} of the digits")


def run(notebook: str, *, grid: dict, budget: str = "default", epochs: int, seeds: list,
        fraction: float = 1.0, workers: int = 0, storage: str = "", log: Callable[[str], None] = print, **fixed) -> StudyResult:
    """Check the parameters, run (or resume, or just load) the study, save and return its result.

    Every point is trained for `epochs` on `fraction` of the training digits with each of
    `seeds`; budget="full": FULL_EPOCHS on all digits, results under figures/full/.
    """
    prepared = data.load_prepared()
    settings = P.study_settings(notebook, len(prepared.train_idx), grid=grid, budget=budget, epochs=epochs,
                                seeds_=seeds, workers=workers, storage=storage, **fixed)
    fraction = 1.0 if budget == "full" else P.number("fraction", fraction, low=0.0, high=1.0, low_open=True)
    url = S.storage_url(settings.storage)
    spec = {"fixed": {k: v for k, v in settings.fixed.items() if k not in VARIED}, "data": prepared.fingerprint()}
    name = study_name(spec)
    storage_ = S.open_storage(url, name)
    with contextlib.ExitStack() as stack:
        if not S.is_rdb(storage_):  # one notebook at a time runs a journal study
            stack.enter_context(S.sole_coordinator(name))
        seconds, tasks = _train(settings, name, url, storage_, fraction, spec, log)
        study = optuna.load_study(study_name=name, storage=storage_)

    names = list(settings.grid)
    label = budget_label(settings.epochs, fraction)
    table = point_rows(study, _points(settings), settings.epochs, fraction, settings.seeds)
    table = table.drop(columns=[k for k in VARIED if k not in names])  # 04's batch size, 05's rate
    best, close, noise = conclude(table, names)
    result = StudyResult(settings, name, table, label, best, close, noise, seconds)
    result.extra.update(fraction=fraction, storage=S.masked(url) or f"journal {paths.show(S.journal_path(name))}",
                        tasks=tasks)
    result.full = proxy.compare_with_full(result, NOISE_Z) if budget == "default" else None
    result.path = save(result, prepared)
    return result


def study_name(spec: dict) -> str:
    """A study is named by what its points share: the settings no study varies, and the data."""
    return f"mlp-{hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:8]}"


def _finished(study: optuna.Study) -> set[tuple]:
    return {W.task_key(W.task_of(t)) for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if W.task_of(t)}


def _points(settings: P.StudySettings) -> list[dict]:
    """The grid's points, each with the varied settings the study fixes (04's batch size, 05's rate)."""
    points = [{**settings.fixed, **dict(zip(settings.grid, values))} for values in itertools.product(*settings.grid.values())]
    return [{k: p[k] for k in VARIED if k in p} for p in points]


def _train(settings: P.StudySettings, name: str, url: str | None, storage_, fraction: float, spec: dict,
           log) -> tuple[float, dict]:
    """Queue and train the study's tasks; returns the seconds it took and what this run did with
    its tasks: how many it trained, or found done (by another notebook, or an earlier run: a
    notebook re-rendered from a finished study trained none, and its seconds are no training time)."""
    study = optuna.create_study(study_name=name, storage=storage_, direction="maximize", load_if_exists=True)
    before = _finished(study)
    if "spec" not in study.user_attrs:
        study.set_user_attr("spec", spec)
    if settings.notebook not in study.user_attrs.get("notebooks", []):  # a remote worker joins by notebook
        study.set_user_attr("notebooks", [*study.user_attrs.get("notebooks", []), settings.notebook])
    if not S.is_rdb(storage_):
        W.interrupted_leftovers(study, storage_)
    start = time.perf_counter()
    points = _points(settings)
    tasks = [{**pt, "seed": s, "epochs": settings.epochs, "fraction": fraction} for pt in points for s in settings.seeds]
    keys = {W.task_key(t) for t in tasks}   # this run's tasks (the study holds other notebooks' and budgets' too)
    # longest first (small batches take the most steps), one seed's points side by side
    tasks.sort(key=lambda t: (t.get("batch_size", 0), t["seed"], t.get("lr", 0)))
    state = W.enqueue(study, tasks)
    log(f"study {name} ({S.masked(url) or 'journal ' + paths.show(S.journal_path(name))}): "
        f"{budget_label(settings.epochs, fraction)}, {len(points)} points x {len(settings.seeds)} seeds: "
        f"{len(state['done'])} done, {len(state['queued']) + len(state['pending'])} to train"
        + (f", {len(state['failed'])} failed for good" if state["failed"] else ""))
    if state["queued"] or state["pending"]:
        W.run_trials(study, storage_, settings.workers, log)
    return time.perf_counter() - start, {"total": len(keys), "trained": len((_finished(study) - before) & keys),
                                         "done_before": len(before & keys)}


# -------------------------------------------------------------------------------------- tables

def trial_rows(study: optuna.Study) -> pd.DataFrame:
    """One row per finished or failed trial: its task, state, final metrics and history."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        task = W.task_of(t)
        if task is None or t.state not in (TrialState.COMPLETE, TrialState.FAIL):
            continue
        history = t.user_attrs.get("history", [])
        last = history[-1] if history else {}
        rows.append({**task, "trial": t.number, "state": t.state.name.lower(),
                     "val_acc": t.value if t.state == TrialState.COMPLETE else None,
                     "val_loss": last.get("val_loss"), "train_acc": last.get("train_acc"),
                     "train_loss": last.get("train_loss"),
                     "seconds_per_epoch": (np.mean([r["seconds"] / r.get("models_in_stack", 1) for r in history])
                                           if history else None),
                     "models_in_stack": last.get("models_in_stack"),
                     "diverged": t.user_attrs.get("diverged"), "failure": t.user_attrs.get("failure"),
                     "history": history})
    return pd.DataFrame(rows)


def point_rows(study: optuna.Study, points: list[dict], epochs: int, fraction: float, seeds) -> pd.DataFrame:
    """One row per grid point at one budget: mean +- std over `seeds` (not the other seeds that
    another notebook sharing the study trained), and its mean curve.

    Columns: the grid parameters, epochs, fraction, n_seeds, seeds, val_acc (list, one per
    seed), val_acc_mean, val_acc_std (NaN for one seed), val_loss/train_acc/train_loss means,
    seconds_per_epoch (per model; per seed in seconds_per_epoch_seeds, and how many models shared
    each seed's stack in models_in_stack), diverged (seeds whose loss went non-finite), failed (seeds
    that failed to train: diverged, or ended below COLLAPSED), state ("complete", or
    "failed" with `failure` when every run failed), curve_mean / curve_std (val_acc per epoch).
    """
    trials = trial_rows(study)
    names = list(points[0])
    rows = []
    for pt in points:
        if len(trials):
            mine = trials[(trials["epochs"] == epochs) & np.isclose(trials["fraction"], fraction)
                          & trials["seed"].isin(seeds)]
            for n in names:
                mine = mine[np.isclose(mine[n], pt[n])] if n == "lr" else mine[mine[n] == pt[n]]
        else:
            mine = trials
        done = mine[mine["state"] == "complete"].drop_duplicates("seed").sort_values("seed") if len(mine) else mine
        failed = mine[mine["state"] == "fail"] if len(mine) else mine
        row = {**pt, "epochs": epochs, "fraction": fraction, "n_seeds": len(done)}
        if len(done):
            accs = done["val_acc"].astype(float).to_numpy()
            curves = np.array([[r["val_acc"] for r in h] for h in done["history"]])
            row.update(seeds=done["seed"].tolist(), val_acc=accs.tolist(), val_acc_mean=accs.mean(),
                       val_acc_std=accs.std(ddof=1) if len(accs) > 1 else float("nan"),
                       val_loss_mean=np.nanmean(done["val_loss"].astype(float)),
                       train_acc_mean=done["train_acc"].astype(float).mean(),
                       train_loss_mean=np.nanmean(done["train_loss"].astype(float)),
                       seconds_per_epoch=done["seconds_per_epoch"].astype(float).mean(),
                       seconds_per_epoch_seeds=done["seconds_per_epoch"].astype(float).tolist(),
                       models_in_stack=[None if pd.isna(k) else int(k) for k in done["models_in_stack"]],
                       diverged=int(done["diverged"].notna().sum()),
                       failed=int((done["diverged"].notna().to_numpy() | (accs < COLLAPSED)).sum()),
                       state="complete",
                       curve_mean=curves.mean(0).tolist(),
                       curve_std=(curves.std(0, ddof=1) if len(curves) > 1 else np.full(curves.shape[1], np.nan)).tolist())
        else:
            row.update(seeds=[], val_acc=[], val_acc_mean=float("nan"), val_acc_std=float("nan"),
                       state="failed" if len(failed) else "missing",
                       failure=failed["failure"].dropna().iloc[-1] if len(failed) and failed["failure"].notna().any() else None)
        rows.append(row)
    return pd.DataFrame(rows)


def pooled_std(table: pd.DataFrame) -> float | None:
    """Seed-to-seed std of val_acc, pooled over the better half of the points with 2+ seeds.

    The better half: a run that collapses (a rate too high for its batch) lands anywhere between
    chance and a working model, and its spread would hide every difference among the points
    that decide the answer.
    """
    ok = table[table["n_seeds"] >= 2]
    ok = ok[ok["val_acc_mean"] >= ok["val_acc_mean"].median()]
    dof = (ok["n_seeds"] - 1).sum()
    if dof == 0:
        return None
    return float(np.sqrt(((ok["n_seeds"] - 1) * ok["val_acc_std"] ** 2).sum() / dof))


def conclude(table: pd.DataFrame, names: list[str]) -> tuple[dict, list[dict], float | None]:
    """The best point by mean (among those with the most seeds) and the points within noise of it.

    A point is indistinguishable from the best when its mean is less than NOISE_Z standard
    errors of the difference below the best's: SE = s * sqrt(1/n_best + 1/n_point), s the pooled
    seed-to-seed std (`pooled_std`). Points with fewer seeds count, with their larger SE.
    """
    ok = table[table["n_seeds"] > 0]
    most = ok["n_seeds"].max()
    top = ok[ok["n_seeds"] == most].sort_values("val_acc_mean", ascending=False).iloc[0]
    s = pooled_std(table)
    best = {**{n: store.plain(top[n]) for n in names}, "val_acc_mean": float(top["val_acc_mean"]),
            "val_acc_std": float(top["val_acc_std"]), "n_seeds": int(top["n_seeds"])}
    close = []
    if s is not None:
        for _, r in ok.iterrows():
            se = s * math.sqrt(1 / best["n_seeds"] + 1 / r["n_seeds"])
            gap = best["val_acc_mean"] - r["val_acc_mean"]
            if gap < NOISE_Z * se and any(store.plain(r[n]) != best[n] for n in names):
                close.append({**{n: store.plain(r[n]) for n in names}, "val_acc_mean": float(r["val_acc_mean"]),
                              "gap": float(gap), "se": float(se), "n_seeds": int(r["n_seeds"])})
    return best, close, s


# ----------------------------------------------------------------------------------------- saving

def save(result: StudyResult, prepared: data.Prepared) -> Path:
    """figures/NN.json (figures/full/NN.json for the full budget): rows, conclusion, parameters, versions."""
    s = result.settings
    folder = paths.figures_dir() / ("full" if s.budget == "full" else "")
    full = None
    if result.full is not None:
        full = {k: v for k, v in result.full.items() if k != "joined"}
    record = store.result_record(
        {**s.as_dict(), "fraction": result.extra.get("fraction", 1.0), "storage": result.extra.get("storage", ""),
         "data": prepared.parameters},
        None, study=result.study_name, budget=result.final, rows=result.table.to_dict(orient="records"),
        best=result.best,
        indistinguishable=result.indistinguishable, noise_std=result.noise_std, seconds=result.seconds,
        tasks=result.extra.get("tasks"),
        data=prepared.fingerprint(), against_full=full)
    return store.save_json(folder / f"{s.notebook}.json", record)
