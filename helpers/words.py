"""A study's result in words (notebooks 04-06 and the README): every number and every word that
depends on one ("best", "within noise", "N times") is rendered from the result, never typed.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from . import params as P
from . import paths, proxy
from .studies import COLLAPSED, NOISE_Z, StudyResult, budget_label


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
        return (f"No full-budget results in `{paths.show(proxy.full_results_path(result.settings.notebook))}`: "
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
