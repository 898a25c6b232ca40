"""Does a cheap budget stand in for the full one? A study's answer beside the committed full-budget results.

The default studies train on a fifth of the digits (`make reproduce`); `make reproduce-full` trains
every point at the seed's budget into figures/full/. A proxy is proven, not assumed: the budgets'
rank agreement (Spearman) is set beside the agreement that seed noise alone allows (two seeds of
the same points at the full budget), over all points and over the best TOP_K, where the pick is made.
"""
from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from . import paths, store

TOP_K = 10      # the budgets are also compared over the full budget's best TOP_K points, where the pick is made


def full_results_path(notebook: str) -> Path:
    return paths.figures_dir() / "full" / f"{notebook}.json"


def compare_with_full(result, noise_z: float) -> dict | None:
    """How the default answer fares at the full budget, from the committed figures/full/ results.

    Returns None without them. Otherwise: the joined table (default mean, full mean), Spearman's
    rank correlation over the common points, the full budget's best point, the default best's
    full-budget mean and its gap to the full best, and whether that gap is within noise (`noise_z`
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
    full_rank = {tuple(store.plain(r[n]) for n in names): i + 1 for i, (_, r) in enumerate(order.iterrows())}
    pick = joined[np.logical_and.reduce([joined[n] == result.best[n] for n in names])]
    pick_full = float(pick["val_acc_mean_full"].iloc[0]) if len(pick) else float("nan")
    s = full.get("noise_std") or result.noise_std
    n_pick = int(pick["n_seeds_full"].iloc[0]) if len(pick) else 1
    se = s * math.sqrt(1 / int(fbest["n_seeds"]) + 1 / n_pick) if s else None
    gap = float(fbest["val_acc_mean"]) - pick_full
    trained = {tuple(store.plain(r[n]) for n in names) for _, r in result.table.iterrows() if r["n_seeds"] > 0}
    mine_top = result.table.merge(top[names], on=names)
    return {"spearman": rho, "n_points": len(joined),
            "spearman_top": _spearman(top_joined["val_acc_mean"], top_joined["val_acc_mean_full"]),
            "n_top": len(top_joined), "ceiling": seed_ceiling(fr), "ceiling_top": seed_ceiling(top),
            "by_seed": seed_agreement(result.table, fr, names), "by_seed_top": seed_agreement(mine_top, top, names),
            "full_best": {n: store.plain(fbest[n]) for n in names}
            | {"val_acc_mean": float(fbest["val_acc_mean"]), "n_seeds": int(fbest["n_seeds"])},
            "pick_full_mean": pick_full, "gap": gap, "se": se,
            "pick_full_rank": full_rank.get(tuple(result.best[n] for n in names)), "n_full": len(order),
            # None: no noise estimate, or the pick has no full-budget result to be judged by
            "within_noise": None if se is None or not np.isfinite(gap) else bool(gap < noise_z * se),
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
