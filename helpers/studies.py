"""Hyperparameter studies (notebooks 04, 05, 06): what they train, and what they conclude.

    result = studies.run("04_lr_sweep", grid={"lr": [...]}, budget=..., epochs=..., seeds=[...], ...)

checks the parameters (`params.study_settings`, a named record), runs or resumes the study and
returns its result, a row per point. A study trains every point of its grid (learning rates,
batch sizes) for one budget (epochs, share of the training digits) once per seed, and reports
each point as mean +- std over its seeds. It names the best point by
mean and the points that cannot be told apart from it, and compares its answer with the
committed full-budget results (`make reproduce-full`: the seed's 20 epochs, every point, all
training digits). The trials themselves run on `helpers.workers` (queue, processes, storage).
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

from . import data, paths, store
from . import params as P
from . import storage as S
from . import workers as W

NOISE_Z = 2.0   # "indistinguishable": the gap to the best is under 2 standard errors (~95%)
# A seed that ends below this validation accuracy failed to train: working models of this size pass
# 0.9 within an epoch, and a collapsed one predicts one class (0.11) or little better.
COLLAPSED = 0.5
TOP_K = 10      # the budgets are also compared over the full budget's best TOP_K points, where the pick is made
# The studies whose points overlap, and what each varies (the rest of a point's settings are its
# fixed ones): 06's lr 0.1 at batch 64 is 04's lr 0.1, 06's lr 0.05 at batch 16 is 05's batch 16.
# A task one of them has trained is copied into the others, not trained again: a model's result
# depends on its settings, seed and data only (not on its stack mates or its study).
SHARED_GRIDS = {"04_lr_sweep": ("lr",), "05_batch_sweep": ("batch_size",), "06_grid_search": ("lr", "batch_size")}


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
    spec = {"fixed": settings.fixed, "data": prepared.fingerprint()}
    name = study_name(notebook, spec)
    storage_ = S.open_storage(url, name)
    with contextlib.ExitStack() as stack:
        if not S.is_rdb(storage_):  # one notebook at a time runs a journal study
            stack.enter_context(S.sole_coordinator(name))
        seconds, tasks = _train(settings, name, url, storage_, fraction, spec, log)
        study = optuna.load_study(study_name=name, storage=storage_)

    names = list(settings.grid)
    label = budget_label(settings.epochs, fraction)
    table = point_rows(study, _points(settings), settings.epochs, fraction)
    best, close, noise = conclude(table, names)
    # when the trials were trained: this run, or an earlier one it resumed or simply read back
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if W.task_of(t) and W.task_of(t)["epochs"] == settings.epochs
            and W.task_of(t)["fraction"] == fraction and COPIED not in t.user_attrs]
    trained = (max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)).total_seconds() \
        if done else None
    result = StudyResult(settings, name, table, label, best, close, noise, seconds)
    result.extra.update(fraction=fraction, storage=S.masked(url) or f"journal {paths.show(S.journal_path(name))}",
                        trained_seconds=trained, tasks=tasks)
    result.full = compare_with_full(result) if budget == "default" else None
    result.path = save(result, prepared)
    return result


def study_name(notebook: str, spec: dict) -> str:
    """A study is named by its notebook and what its points share: fixed settings and data."""
    return f"{notebook}-{hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:8]}"


COPIED = "copied_from"   # user attribute of a trial another study trained: "<study> trial <number>"


def adopt(notebook: str, study: optuna.Study, storage_, url: str | None, spec: dict,
          tasks: list[dict]) -> dict[str, int]:
    """Copy into `study` each of `tasks` that a sibling study (SHARED_GRIDS) has finished.

    A task's full settings are this study's fixed ones plus its point; a sibling that varies
    other settings holds the same task under the study named by the settings it fixes. Returns
    how many tasks came from each sibling.
    """
    if notebook not in SHARED_GRIDS:
        return {}
    own = {W.task_key(W.task_of(t)) for t in study.get_trials(deepcopy=False) if W.task_of(t)}
    budget_keys = ("seed", "epochs", "fraction")
    copied: dict[str, int] = {}
    for other, varied in SHARED_GRIDS.items():
        if other == notebook:
            continue
        wanted: dict[str, list[tuple[dict, dict]]] = {}   # sibling study name -> (our task, its task)
        for task in tasks:
            settings = {**spec["fixed"], **{k: v for k, v in task.items() if k not in budget_keys}}
            if W.task_key(task) in own or not set(varied) <= set(settings):
                continue
            fixed = {k: v for k, v in settings.items() if k not in varied}
            its_task = {**{k: settings[k] for k in varied}, **{k: task[k] for k in budget_keys}}
            wanted.setdefault(study_name(other, {"fixed": fixed, "data": spec["data"]}), []).append((task, its_task))
        for name, pairs in wanted.items():
            sibling = _existing_study(storage_, url, name)
            if sibling is None:
                continue
            finished = {W.task_key(W.task_of(t)): t for t in sibling.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                        if W.task_of(t)}
            for task, its_task in pairs:
                t = finished.get(W.task_key(its_task))
                if t is None or W.task_key(task) in own:
                    continue
                study.add_trial(optuna.trial.create_trial(
                    state=TrialState.COMPLETE, value=t.value, intermediate_values=t.intermediate_values,
                    user_attrs={**t.user_attrs, "task": task, COPIED: t.user_attrs.get(COPIED, f"{name} trial {t.number}")}))
                own.add(W.task_key(task))
                copied[other] = copied.get(other, 0) + 1
    return copied


def _existing_study(storage_, url: str | None, name: str) -> optuna.Study | None:
    """The study `name` if it exists (the same database, or its own journal file), else None."""
    if S.is_rdb(storage_):
        if name not in optuna.study.get_all_study_names(storage_):
            return None
        return optuna.load_study(study_name=name, storage=storage_)
    if not S.journal_path(name).exists():
        return None
    return optuna.load_study(study_name=name, storage=S.open_storage(None, name))


def _finished(study: optuna.Study) -> dict[int, tuple]:
    """Finished trial numbers -> (task key, whether the trial was copied from a sibling study)."""
    return {t.number: (W.task_key(W.task_of(t)), COPIED in t.user_attrs)
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if W.task_of(t)}


def _plain(v):
    return v.item() if hasattr(v, "item") else v


def _points(settings: P.StudySettings) -> list[dict]:
    return [dict(zip(settings.grid, values)) for values in itertools.product(*settings.grid.values())]


def _train(settings: P.StudySettings, name: str, url: str | None, storage_, fraction: float, spec: dict,
           log) -> tuple[float, dict]:
    """Queue and train the study's tasks; returns the seconds it took and what this run did with
    its tasks: how many it trained, copied from a sibling, or found done (a notebook re-rendered
    from a finished study trained none, and its seconds are no training time)."""
    study = optuna.create_study(study_name=name, storage=storage_, direction="maximize", load_if_exists=True)
    before = _finished(study)
    if "spec" not in study.user_attrs:
        study.set_user_attr("spec", spec)
    if not S.is_rdb(storage_):
        W.interrupted_leftovers(study, storage_)
    start = time.perf_counter()
    points = _points(settings)
    tasks = [{**pt, "seed": s, "epochs": settings.epochs, "fraction": fraction} for pt in points for s in settings.seeds]
    keys = {W.task_key(t) for t in tasks}   # this run's tasks (the study may hold other budgets' too)
    # longest first (small batches take the most steps), one seed's points side by side
    tasks.sort(key=lambda t: (t.get("batch_size", 0), t["seed"], t.get("lr", 0)))
    copied = adopt(settings.notebook, study, storage_, url, spec, tasks)
    state = W.enqueue(study, tasks)
    log(f"study {name} ({S.masked(url) or 'journal ' + paths.show(S.journal_path(name))}): "
        f"{budget_label(settings.epochs, fraction)}, {len(points)} points x {len(settings.seeds)} seeds: "
        f"{len(state['done'])} done"
        + (" (" + ", ".join(f"{n} copied from {other}" for other, n in copied.items()) + ")" if copied else "")
        + f", {len(state['queued']) + len(state['pending'])} to train"
        + (f", {len(state['failed'])} failed for good" if state["failed"] else ""))
    if state["queued"] or state["pending"]:
        W.run_trials(study, storage_, settings.workers, log)
    new = [copied for n, (key, copied) in _finished(study).items() if n not in before and key in keys]
    return time.perf_counter() - start, {
        "total": len(keys), "trained": new.count(False), "copied": new.count(True),
        "done_before": len({key for key, _ in before.values()} & keys)}


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


def point_rows(study: optuna.Study, points: list[dict], epochs: int, fraction: float) -> pd.DataFrame:
    """One row per grid point at one budget: mean +- std over its seeds, and its mean curve.

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
            mine = trials[(trials["epochs"] == epochs) & np.isclose(trials["fraction"], fraction)]
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
    best = {**{n: _plain(top[n]) for n in names}, "val_acc_mean": float(top["val_acc_mean"]),
            "val_acc_std": float(top["val_acc_std"]), "n_seeds": int(top["n_seeds"])}
    close = []
    if s is not None:
        for _, r in ok.iterrows():
            se = s * math.sqrt(1 / best["n_seeds"] + 1 / r["n_seeds"])
            gap = best["val_acc_mean"] - r["val_acc_mean"]
            if gap < NOISE_Z * se and any(_plain(r[n]) != best[n] for n in names):
                close.append({**{n: _plain(r[n]) for n in names}, "val_acc_mean": float(r["val_acc_mean"]),
                              "gap": float(gap), "se": float(se), "n_seeds": int(r["n_seeds"])})
    return best, close, s


# ------------------------------------------------------------------------- against the full budget

def full_results_path(notebook: str) -> Path:
    return paths.figures_dir() / "full" / f"{notebook}.json"


def compare_with_full(result: StudyResult) -> dict | None:
    """How the default answer fares at the full budget, from the committed figures/full/ results.

    Returns None without them. Otherwise: the joined table (default mean, full mean), Spearman's
    rank correlation over the common points, the full budget's best point, the default best's
    full-budget mean and its gap to the full best, and whether that gap is within noise (NOISE_Z
    standard errors, with the pooled seed std of the full results, else of the default's).
    """
    path = full_results_path(result.settings.notebook)
    if not path.exists():
        return None
    full = json.loads(path.read_text())
    names = list(result.settings.grid)
    fr = pd.DataFrame(full["rows"])
    fr = fr[fr["n_seeds"] > 0]
    mine = result.table[[*names, "val_acc_mean", "n_seeds"]]
    joined = mine.merge(fr[[*names, "val_acc_mean", "val_acc_std", "n_seeds"]], on=names,
                        suffixes=("", "_full"))
    rho = _spearman(joined["val_acc_mean"], joined["val_acc_mean_full"])
    order = fr.sort_values("val_acc_mean", ascending=False)
    fbest = order.iloc[0]
    top = order.head(TOP_K)
    top_joined = joined.merge(top[names], on=names)
    full_rank = {tuple(_plain(r[n]) for n in names): i + 1 for i, (_, r) in enumerate(order.iterrows())}
    pick = joined[np.logical_and.reduce([joined[n] == result.best[n] for n in names])]
    pick_full = float(pick["val_acc_mean_full"].iloc[0]) if len(pick) else float("nan")
    s = full.get("noise_std") or result.noise_std
    n_pick = int(pick["n_seeds_full"].iloc[0]) if len(pick) else 1
    se = s * math.sqrt(1 / int(fbest["n_seeds"]) + 1 / n_pick) if s else None
    gap = float(fbest["val_acc_mean"]) - pick_full
    trained = {tuple(_plain(r[n]) for n in names) for _, r in result.table.iterrows() if r["n_seeds"] > 0}
    mine_top = result.table.merge(top[names], on=names)
    return {"spearman": rho, "n_points": len(joined),
            "spearman_top": _spearman(top_joined["val_acc_mean"], top_joined["val_acc_mean_full"]),
            "n_top": len(top_joined), "ceiling": seed_ceiling(fr), "ceiling_top": seed_ceiling(top),
            "by_seed": seed_agreement(result.table, fr, names), "by_seed_top": seed_agreement(mine_top, top, names),
            "full_best": {n: _plain(fbest[n]) for n in names}
            | {"val_acc_mean": float(fbest["val_acc_mean"]), "n_seeds": int(fbest["n_seeds"])},
            "pick_full_mean": pick_full, "gap": gap, "se": se,
            "pick_full_rank": full_rank.get(tuple(result.best[n] for n in names)), "n_full": len(order),
            # None: no noise estimate, or the pick has no full-budget result to be judged by
            "within_noise": None if se is None or not np.isfinite(gap) else bool(gap < NOISE_Z * se),
            "full_top_untrained": [dict(zip(names, k)) for k in list(full_rank)[:5] if k not in trained],
            "full_seeds": full.get("parameters", {}).get("seeds"),
            "joined": joined}


def _spearman(a: pd.Series, b: pd.Series) -> float | None:
    """Spearman's rank correlation; None when undefined (fewer than 2 points, or one side all ties)."""
    if len(a) < 2:
        return None
    rho = pd.Series(np.asarray(a, float)).corr(pd.Series(np.asarray(b, float)), method="spearman")
    return float(rho) if np.isfinite(rho) else None


def _by_seed(rows: pd.DataFrame) -> list[dict]:
    """Each row's accuracy per seed: [{seed: val_acc}], one dict per point."""
    return [dict(zip(r["seeds"], r["val_acc"])) for _, r in rows.iterrows()]


def _pairwise(a: list[dict], b: list[dict], pairs) -> dict | None:
    """Spearman between seed i of `a` and seed j of `b`, over the points holding both, for (i, j) in
    `pairs`: mean, min, max over the pairs that give a value."""
    rhos = []
    for i, j in pairs:
        both = [(x[i], y[j]) for x, y in zip(a, b) if i in x and j in y]
        rho = _spearman(pd.Series([u for u, _ in both]), pd.Series([v for _, v in both]))
        if rho is not None:
            rhos.append(rho)
    if not rhos:
        return None
    return {"mean": float(np.mean(rhos)), "min": float(min(rhos)), "max": float(max(rhos)), "pairs": len(rhos)}


def seed_ceiling(rows: pd.DataFrame) -> dict | None:
    """What noise alone allows: Spearman between two seeds of the same points, for every pair of seeds.

    Two budgets cannot be expected to order points more alike than one budget orders them when
    only the seed changes. It is a statistic of single seeds, so it is compared with the budgets'
    agreement seed by seed (`seed_agreement`), not with that of their means.
    """
    values = _by_seed(rows)
    seeds = sorted({k for v in values for k in v})
    return _pairwise(values, values, itertools.combinations(seeds, 2))


def seed_agreement(mine: pd.DataFrame, full: pd.DataFrame, names: list[str]) -> dict | None:
    """Spearman between a seed of this budget and a seed of the full one, over the points both hold,
    for every such pair of seeds: the budgets' agreement at the ceiling's own granularity."""
    joined = mine[[*names, "seeds", "val_acc"]].merge(full[[*names, "seeds", "val_acc"]], on=names,
                                                       suffixes=("", "_full"))
    a = _by_seed(joined)
    b = _by_seed(joined.drop(columns=["seeds", "val_acc"]).rename(columns={"seeds_full": "seeds", "val_acc_full": "val_acc"}))
    return _pairwise(a, b, itertools.product(sorted({k for v in a for k in v}), sorted({k for v in b for k in v})))


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
        trained_seconds=result.extra.get("trained_seconds"), tasks=result.extra.get("tasks"),
        data=prepared.fingerprint(), against_full=full)
    return store.save_json(folder / f"{s.notebook}.json", record)


# ------------------------------------------------------------------------------------ for reading

def _pct(v: float) -> str:
    return "n/a" if v is None or not np.isfinite(v) else f"{100 * v:.2f}"


def shown(result: StudyResult):
    """The final table as a reader wants it: each point's accuracy as mean +- std (%), seeds, time."""
    names = list(result.settings.grid)
    t = result.table
    out = t[names].copy()
    out["validation accuracy (%)"] = [
        (f"{_pct(m)} ± {_pct(s)}" if n > 1 else _pct(m)) if st == "complete" else st
        for m, s, n, st in zip(t["val_acc_mean"], t["val_acc_std"], t["n_seeds"], t["state"])]
    out["seeds"] = t["n_seeds"]
    out["seconds per model-epoch"] = t.get("seconds_per_epoch", pd.Series(dtype=float)).map(
        lambda v: "" if not np.isfinite(v) else f"{v:.2f}")
    out["seeds that failed to train (diverged or collapsed)"] = t.get("failed", pd.Series(0, index=t.index)).fillna(0).astype(int)
    return out.style.hide(axis="index")


WORDS = {"lr": "peak lr", "batch_size": "batch"}


def point_words(p: dict, names) -> str:
    """A grid point in words: \"peak lr 0.05 / batch 32\"."""
    return " / ".join(f"{WORDS.get(n, n)} {p[n]:g}" if isinstance(p[n], float) else f"{WORDS.get(n, n)} {p[n]}"
                      for n in names)


def _acc(mean: float, std: float | None = None, n: int | None = None) -> str:
    spread = f" ± {_pct(std)}" if std is not None and np.isfinite(std) else ""
    return f"{_pct(mean)}%{spread}" + (f" ({n} seed{'s' if n != 1 else ''})" if n is not None else "")


def _failures(result: StudyResult) -> list[str]:
    """Points where some seed failed to train (loss non-finite, or ended near chance), in words."""
    t, names = result.table, list(result.settings.grid)
    out = []
    for _, r in t[t["state"] == "complete"].iterrows():
        bad = int(r.get("failed", 0) or 0)
        if bad:
            out.append(f"{point_words(r, names)} ({bad} of {int(r['n_seeds'])} seeds, mean {_pct(r['val_acc_mean'])}%)")
    out += [f"{point_words(r, names)} (every run failed: {r.get('failure')})" for _, r in t[t["state"] == "failed"].iterrows()]
    return out


def failed_points(result: StudyResult) -> list[str]:
    """The points where some seed failed to train: a fact nbval can check, unlike their accuracies."""
    t, names = result.table, list(result.settings.grid)
    bad = (t.get("failed", pd.Series(0, index=t.index)).fillna(0) > 0) | (t["state"] == "failed")
    return [point_words(r, names) for _, r in t[bad].iterrows()]


def verdict(result: StudyResult) -> str:
    """The study's answer, as Markdown: the best point by mean, and what noise cannot separate from it."""
    names = list(result.settings.grid)
    b = result.best
    lines = [f"- **Best by mean:** {point_words(b, names)}, {_acc(b['val_acc_mean'], b['val_acc_std'], b['n_seeds'])}, "
             f"{result.final}."]
    if result.noise_std is None:
        lines.append("- One seed per point: no estimate of the noise, so no point can be ruled out.")
    else:
        lines.append(f"- Seed-to-seed noise (standard deviation pooled over the better half of the points): "
                     f"{_pct(result.noise_std)} points.")
        close = "; ".join(f"{point_words(c, names)} ({_pct(c['val_acc_mean'])}%)" for c in result.indistinguishable)
        lines.append(f"- Within noise of the best (gap under {NOISE_Z:g} standard errors): {close}." if close
                     else "- No other point is within noise of the best.")
    failed = _failures(result)
    if failed:
        lines.append("- Failed to train (diverged, or ended near chance level): " + "; ".join(failed) + ".")
    return "\n".join(lines)


def _agreement(rho: float | None, by_seed: dict | None, ceiling: dict | None) -> str:
    """A budget-vs-full rank correlation of means, then seed by seed beside its noise ceiling."""
    text = "undefined (ties, or too few points)" if rho is None else f"{rho:.2f}"
    if by_seed is None or ceiling is None:
        return text + " (no noise ceiling: it needs two seeds of each point at the full budget)"
    c, b = ceiling, by_seed
    if b["mean"] >= c["mean"]:
        word = "no worse than two full-budget seeds agree with each other: seed noise, not the cheaper budget, limits it"
    elif b["mean"] >= c["min"]:
        word = "within the range that two full-budget seeds span"
    else:
        word = "less well than any two full-budget seeds agree: the cheaper budget orders these points differently"
    return (f"{text} for the means. Seed by seed, a seed here and a seed of the full budget agree to {b['mean']:.2f} "
            f"on average ({b['pairs']} pairs), two full-budget seeds to {c['mean']:.2f} (the noise ceiling, "
            f"{c['min']:.2f} to {c['max']:.2f} over {c['pairs']} pairs): {word}")


def verdict_full(result: StudyResult) -> str:
    """How the answer compares with the committed full-budget results, as Markdown."""
    names = list(result.settings.grid)
    if result.settings.budget == "full":
        return "This is the full budget (`make reproduce-full`): the default budget's notebook compares itself with it."
    f = result.full
    if f is None:
        return (f"No full-budget results in `{paths.show(full_results_path(result.settings.notebook))}`: "
                "run `make reproduce-full` to measure how well this budget stands in for the seed's.")
    fb = f["full_best"]
    seeds = f["full_seeds"] or []
    lines = [f"- **Full budget** ({budget_label(P.FULL_EPOCHS, 1.0)} on all digits, {len(seeds)} seeds): best {point_words(fb, names)} at {_pct(fb['val_acc_mean'])}%.",
             (f"- This budget's pick, {point_words(result.best, names)}, reaches {_pct(f['pick_full_mean'])}% there "
              f"(rank {f['pick_full_rank']} of {f['n_full']}): {100 * f['gap']:.2f} points below the full best, "
              + (f"{'within' if f['within_noise'] else 'outside'} noise ({NOISE_Z:g} standard errors = "
                 f"{100 * NOISE_Z * f['se']:.2f} points)." if f["within_noise"] is not None
                 else "with no estimate of the noise to judge that by.")
              if f["pick_full_rank"] else
              f"- This budget's pick, {point_words(result.best, names)}, has no full-budget result to compare."),
             f"- Rank agreement (Spearman's ρ: 1 when both budgets order the points alike, 0 when unrelated) "
             f"over all {f['n_points']} points: {_agreement(f['spearman'], f['by_seed'], f['ceiling'])}."]
    if f["n_top"] < f["n_points"]:
        lines.append(f"- Over the full budget's best {f['n_top']}, where the choice is made: "
                     f"{_agreement(f['spearman_top'], f['by_seed_top'], f['ceiling_top'])}.")
    missing = f["full_top_untrained"]
    lines.append("- Of the full budget's five best points, " + (
        "every one was trained here: none was dropped." if not missing else
        "these were not trained here: " + "; ".join(point_words(m, names) for m in missing) + "."))
    return "\n".join(lines)


def conclusion(result: StudyResult) -> str:
    """A closing paragraph, as Markdown, built from the result: the words follow the numbers."""
    names = list(result.settings.grid)
    b, close = result.best, result.indistinguishable
    text = [f"At {'the full' if result.settings.budget == 'full' else 'this'} budget ({result.final}) the best "
            f"point is {point_words(b, names)}, at {_acc(b['val_acc_mean'], b['val_acc_std'], b['n_seeds'])}."]
    if result.noise_std is None:
        text.append("With one seed per point, nothing can be ruled out.")
    elif close:
        text.append(f"{len(close)} other point{'s are' if len(close) > 1 else ' is'} within noise of it, so "
                    f"{'these seeds cannot put them in order' if len(close) > 1 else 'the two cannot be ranked'}.")
    else:
        text.append(f"Every other point is more than {NOISE_Z:g} standard errors below it.")
    ok = result.table[(result.table["state"] == "complete")]
    worst = ok.sort_values("val_acc_mean").iloc[0]
    if worst["val_acc_mean"] >= COLLAPSED:
        text.append(f"The weakest point, {point_words(worst, names)}, ends "
                    f"{100 * (b['val_acc_mean'] - worst['val_acc_mean']):.2f} points lower.")
    failed = _failures(result)
    if failed:
        text.append(f"{len(failed)} point{'s' if len(failed) > 1 else ''} failed to train in at least one seed.")
    f = result.full
    if f is not None and f["within_noise"] is not None:
        agree = f["within_noise"]
        text.append(f"At the full budget the pick is {'within' if agree else 'outside'} noise of the full best "
                    f"({100 * f['gap']:.2f} points below {point_words(f['full_best'], names)})"
                    + (", so this cheaper budget answers the seed's question." if agree else
                       ": here the cheaper budget does not stand in for the full one."))
    elif f is not None:
        text.append("Whether the cheaper budget's pick holds at the full budget cannot be judged here: "
                    + ("it has no full-budget result." if not f["pick_full_rank"] else "there is no noise estimate."))
    return " ".join(text)


def cost(result: StudyResult, name: str) -> str:
    """The slowest point's seconds per model-epoch as a multiple of the fastest's, in words, with
    the stack sizes they were measured in (a bigger stack shares its overhead among more models)."""
    t = result.table[result.table["state"] == "complete"].dropna(subset=["seconds_per_epoch"])
    if len(t) < 2:
        return ""
    slow, fast = t.loc[t["seconds_per_epoch"].idxmax()], t.loc[t["seconds_per_epoch"].idxmin()]
    stacks = lambda r: "–".join(map(str, sorted({k for k in r["models_in_stack"] if k is not None})))  # noqa: E731
    return (f"Per model-epoch, {WORDS.get(name, name)} {slow[name]} cost {slow['seconds_per_epoch'] / fast['seconds_per_epoch']:.1f} "
            f"times {WORDS.get(name, name)} {fast[name]} ({slow['seconds_per_epoch']:.2f} s against "
            f"{fast['seconds_per_epoch']:.2f} s, in stacks of {stacks(slow)} and {stacks(fast)} models).")


def heatmap_data(result: StudyResult) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A two-parameter grid's mean accuracy (%) as a matrix, and each cell's text: mean, +- std, seeds."""
    rows, cols = list(result.settings.grid)
    t = result.table.copy()
    seeds = t["n_seeds"].nunique() > 1
    t["text"] = [("failed" if st != "complete" else f"{100 * m:.2f}" + (f"\n±{100 * s:.2f}" if n > 1 else "")
                  + (f"\n({n})" if seeds else ""))
                 for m, s, n, st in zip(t["val_acc_mean"], t["val_acc_std"], t["n_seeds"], t["state"])]
    values = t.pivot(index=rows, columns=cols, values="val_acc_mean") * 100
    return values, t.pivot(index=rows, columns=cols, values="text")
