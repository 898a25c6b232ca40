"""Figures: one function per kind of plot; each returns its Figure, `save` writes it to figures/.

Saved at a modest resolution (dpi 80) so the executed notebooks, which embed them, stay small.
"""
from __future__ import annotations

import itertools
import math
from typing import TYPE_CHECKING, Mapping, Sequence

import matplotlib
import matplotlib.pyplot as plt
import matplotlib.ticker as mticker
import numpy as np
import torch
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle

from . import paths, store

if TYPE_CHECKING:  # only annotations name pandas: the tables drawn are built elsewhere
    import pandas as pd

DPI = 80
# Axis words for the study parameters, so that no axis reads like a variable name.
WORDS = {"lr": "peak learning rate", "batch_size": "batch size (digits per step)"}
# Below this validation accuracy a run has collapsed: chance is 10%, and a collapsed run predicts
# one or two classes for every digit.
CHANCE = 0.2
BELOW = "#d4d4d4"   # cells below a colour range: neutral, with their number printed
BELOW_RGB = matplotlib.colors.to_rgb(BELOW)
# Keys of a point (StudyResult.best, .indistinguishable) that are results, not grid values.
_RESULTS = ("val_acc_mean", "val_acc_std", "n_seeds", "gap", "se")


def words(name: str) -> str:
    """How an axis names a study parameter."""
    return WORDS.get(name, name.replace("_", " "))


def _rows_of(table: pd.DataFrame, points: Sequence[Mapping]) -> np.ndarray:
    """Which rows of `table` are one of `points` (dicts of grid values; result keys are ignored)."""
    mask = np.zeros(len(table), dtype=bool)
    for p in points:
        keys = [k for k in p if k in table.columns and k not in _RESULTS]
        if not keys:
            raise ValueError(f"point {dict(p)} names none of the table's columns")
        mask |= np.logical_and.reduce([np.isclose(table[k].to_numpy(dtype=float), float(p[k])) for k in keys])
    return mask


def _side_labels(ax, xs, ys, texts, colors, header: str = ""):
    """Name points in a column right of `ax`, spread so that no two overlap, each tied to its point.

    Call once the axis limits are final: the points are placed in axes coordinates.
    """
    if not len(texts):
        return
    to_axes = ax.transData + ax.transAxes.inverted()
    at = np.array([to_axes.transform((x, y))[1] for x, y in zip(xs, ys)])
    order = np.argsort(at, kind="stable")
    gap = min(0.075, 1 / max(len(at) - 1, 1))
    placed = np.clip(at[order], 0, 1)
    for i in range(1, len(placed)):
        placed[i] = max(placed[i], placed[i - 1] + gap)
    placed[-1] = min(placed[-1], 0.93 if header else 1)
    for i in range(len(placed) - 2, -1, -1):
        placed[i] = min(placed[i], placed[i + 1] - gap)
    for k, ty in zip(order, placed):
        ax.annotate(texts[k], (xs[k], ys[k]), xytext=(1.03, ty), textcoords="axes fraction", va="center",
                    fontsize=8, color=colors[k], annotation_clip=False,
                    arrowprops=dict(arrowstyle="-", color=colors[k], lw=0.6, alpha=0.6, shrinkA=0, shrinkB=2))
    if header:
        ax.annotate(header, (1.03, 1.04), xycoords="axes fraction", fontsize=8, fontweight="bold")


def _log_axis(ax, values) -> None:
    """A log x axis ticked at the grid's own values, written as plain numbers (8, 0.03)."""
    ax.set_xscale("log")
    ticks = sorted({float(v) for v in values})
    ax.xaxis.set_major_locator(mticker.FixedLocator(ticks))
    ax.xaxis.set_major_formatter(mticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_locator(mticker.NullLocator())
    steps = np.diff(np.log10(ticks))
    if len(steps) and steps.min() < 0.08 * steps.sum():  # close values (0.03, 0.05) would run into each other
        ax.tick_params(axis="x", labelrotation=45)


def save(fig: matplotlib.figure.Figure, name: str) -> str:
    """Write `fig` to figures/<name>.png atomically; return the path relative to the repo."""
    path = paths.figures_dir() / f"{name}.png"
    with store.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight")
    return paths.show(path)


def digit_grid(images: torch.Tensor, titles: Sequence[str], cols: int = 10,
               title: str | None = None, title_colors: Sequence[str] | None = None):
    """Images `[N, 28, 28]` (uint8) in a grid, each with its title."""
    n = len(images)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.05, rows * 1.25), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(np.asarray(images[i]), cmap="gray_r", vmin=0, vmax=255)
            ax.set_title(titles[i], fontsize=8,
                         color=title_colors[i] if title_colors is not None else "black")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def class_distribution(counts: pd.DataFrame):
    """Grouped bars of the share of each class per split (columns of `counts` are splits)."""
    shares = counts / counts.sum()
    ax = (shares * 100).plot.bar(figsize=(8, 3.2), rot=0, width=0.8)
    ax.set_xlabel("digit")
    ax.set_ylabel("share of split (%)")
    ax.set_title("Class distribution")
    ax.legend(title="split", bbox_to_anchor=(1.01, 1), loc="upper left")
    return ax.figure


def pixel_histogram(images: torch.Tensor):
    """Histogram of all pixel values (log count: most pixels are background)."""
    counts = torch.bincount(images.reshape(-1).long(), minlength=256).numpy()
    fig, ax = plt.subplots(figsize=(8, 3))
    ax.bar(np.arange(256), counts, width=1.0, color="tab:blue")
    ax.set_yscale("log")
    ax.set_xlabel("pixel value (0 = background, 255 = ink)")
    ax.set_ylabel("count (log)")
    ax.set_title("Pixel intensities")
    return fig


def class_means(images: torch.Tensor, labels: torch.Tensor):
    """The mean image of each class."""
    means = torch.stack([images[labels == c].float().mean(0) for c in range(10)])
    return digit_grid(means, [str(c) for c in range(10)], cols=10, title="Mean image per class")


def training_curves(history: Sequence[Mapping], title: str = "Training"):
    """Loss and accuracy per epoch, train vs validation."""
    epochs = [r["epoch"] for r in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.5))
    for key, label in (("train", "train"), ("val", "validation")):
        ax1.plot(epochs, [r[f"{key}_loss"] for r in history], marker=".", label=label)
        ax2.plot(epochs, [100 * r[f"{key}_acc"] for r in history], marker=".", label=label)
    ax1.set(xlabel="epoch", ylabel="cross-entropy loss", title="Loss")
    ax2.set(xlabel="epoch", ylabel="accuracy (%)", title="Accuracy")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def training_band(histories: Sequence[Sequence[Mapping]], title: str = "Training"):
    """Loss and accuracy per epoch, train vs validation: the mean over seeds with a +- std band.

    Accuracy twice: over its whole range, so that every epoch of both curves shows, and zoomed
    into the second half of training, where both are near 100% and the seeds differ.
    """
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(14, 3.8))
    epochs = np.arange(1, len(histories[0]) + 1)
    late = epochs > len(epochs) // 2
    low, high = [], []
    for key, label in (("train", "train (dropout, augmentation on)"), ("val", "validation")):
        for axes, metric, scale in (((ax1,), "loss", 1), ((ax2, ax3), "acc", 100)):
            values = scale * np.array([[r[f"{key}_{metric}"] for r in h] for h in histories], dtype=float)
            mean = values.mean(0)
            std = values.std(0, ddof=1) if len(values) > 1 else np.zeros_like(mean)
            for ax in axes:
                line, = ax.plot(epochs, mean, marker=".", label=label)
                ax.fill_between(epochs, mean - std, mean + std, color=line.get_color(), alpha=0.2, linewidth=0)
            if metric == "acc":
                low.append((mean - std)[late].min())
                high.append((mean + std)[late].max())
    ax1.set(xlabel="epoch", ylabel="cross-entropy loss (smoothed targets)", title="Loss")
    ax2.set(xlabel="epoch", ylabel="accuracy (%)", title="Accuracy, every epoch")
    pad = 0.08 * (max(high) - min(low))
    ax3.set_xlim(epochs[late][0] - 0.5, epochs[-1] + 0.5)
    ax3.set_ylim(min(low) - pad, min(max(high) + pad, 100))
    ax3.set(xlabel="epoch", ylabel="accuracy (%)",
            title=f"Accuracy, epochs {epochs[late][0]}–{epochs[-1]} (zoomed)")
    for ax in (ax1, ax2, ax3):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    n = len(histories)
    fig.suptitle(title + (f" (mean of {n} seeds, band: ± 1 std over seeds)" if n > 1 else ""))
    fig.tight_layout()
    return fig


def curves_band(table: pd.DataFrame, label: str, legend_title: str = "", title: str = "",
                fmt: str = "{:g}", best: Mapping | None = None, close: Sequence[Mapping] = ()):
    """Validation accuracy per epoch, one line per study point: the mean over seeds, +- std band.

    `best` (a point such as StudyResult.best; by default the best final mean) and `close` (the
    points within noise of it, StudyResult.indistinguishable) are drawn in colour, every other
    point thin and grey; each line is named at the right. The right-hand panel zooms into the
    last third of the epochs (at least 3) around the coloured lines.
    """
    rows = table[table["n_seeds"] > 0].reset_index(drop=True)
    is_best = (_rows_of(rows, [best]) if best is not None
               else (rows["val_acc_mean"] == rows["val_acc_mean"].max()).to_numpy())
    is_close = _rows_of(rows, close) & ~is_best
    palette = itertools.cycle([c for c in plt.cm.tab10.colors if c != plt.cm.tab10.colors[3]])  # red is the best's
    styles = [dict(color="tab:red", lw=2.2, zorder=4) if b else dict(color=next(palette), lw=1.6, zorder=3) if c
              else dict(color="0.6", lw=0.9, zorder=2) for b, c in zip(is_best, is_close)]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.2), gridspec_kw={"wspace": 0.45})
    curves = [(100 * np.asarray(r["curve_mean"], dtype=float), 100 * np.asarray(r["curve_std"], dtype=float))
              for _, r in rows.iterrows()]
    n_epochs = max(len(m) for m, _ in curves)
    first = n_epochs - max(3, n_epochs // 3) + 1
    shown = is_best | is_close
    # the zoom gives each coloured line a bar at its last epoch instead of a band, side by side:
    # overlapping bands there would hide the lines
    shift = dict(zip(np.flatnonzero(shown), np.linspace(-0.25, 0.25, shown.sum()) if shown.sum() > 1 else [0.0]))
    for ax in (ax1, ax2):
        for k, ((mean, std), style) in enumerate(zip(curves, styles)):
            epochs = np.arange(1, len(mean) + 1)
            ax.plot(epochs, mean, marker="." if shown[k] else None, **style)
            if not (shown[k] and np.isfinite(std).all()):
                continue
            if ax is ax1:
                ax.fill_between(epochs, mean - std, mean + std, color=style["color"], alpha=0.2, linewidth=0)
            else:
                ax.errorbar(epochs[-1] + shift[k], mean[-1], yerr=std[-1], color=style["color"], capsize=3, lw=1.2)
    window = np.array([[np.nanmin((m - np.nan_to_num(s))[first - 1:]), np.nanmax((m + np.nan_to_num(s))[first - 1:])]
                       for (m, s), keep in zip(curves, shown) if keep])
    pad = 0.15 * (window[:, 1].max() - window[:, 0].min()) + 0.02
    ax2.set_xlim(first - 0.3, n_epochs + 0.4)
    ax2.set_ylim(window[:, 0].min() - pad, window[:, 1].max() + pad)
    names = [fmt.format(v) for v in rows[label]]
    for ax in (ax1, ax2):
        lo, hi = ax.get_ylim()
        ends = [(i, m[-1]) for i, (m, _) in enumerate(curves) if lo <= m[-1] <= hi]
        _side_labels(ax, [len(curves[i][0]) for i, _ in ends], [y for _, y in ends], [names[i] for i, _ in ends],
                     [styles[i]["color"] if styles[i]["color"] != "0.6" else "0.35" for i, _ in ends],
                     header=legend_title)
        ax.set(xlabel="epoch", ylabel="validation accuracy (%)")
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(mticker.MaxNLocator(integer=True))
    ax1.set_title("Every epoch (band: ± 1 std over seeds)", fontsize=10)
    ax2.set_title(f"Epochs {first}–{n_epochs}, zoomed (bars: ± 1 std over seeds)", fontsize=10)
    handles = [Line2D([], [], color="tab:red", lw=2.2, label="best by mean"),
               Line2D([], [], color="tab:blue", lw=1.6, label="within noise of the best (a colour each)"),
               Line2D([], [], color="0.6", lw=0.9, label="the other points")]
    ax1.legend(handles=handles[:2 if is_close.any() else 1] + handles[2:], fontsize=8, loc="lower right")
    n = int(rows["n_seeds"].max()) if len(rows) else 0
    fig.suptitle(title + (f" (mean of {n} seeds)" if n > 1 else ""))
    fig.subplots_adjust(top=0.84)
    return fig


def final_metrics(table: pd.DataFrame, x: str, log_x: bool = True, title: str = "",
                  zoom: float | None = None):
    """Final validation accuracy (mean +- std over seeds, each seed a dot) and loss against `x`.

    `zoom`: also a right-hand panel of accuracy limited to the `zoom` points below the best, where
    the differences that decide the answer are.
    """
    t = table[table["n_seeds"] > 0].sort_values(x)
    panels = 3 if zoom else 2
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 3.8))
    ax1, ax2 = axes[0], axes[1]
    ax1.plot(t[x], t["val_loss_mean"], marker="o", label="validation")
    ax1.plot(t[x], t["train_loss_mean"], marker="o", label="train (dropout on)")
    ax1.set(ylabel="final cross-entropy loss (mean over seeds)", title="Loss")
    for ax in axes[1:]:
        ax.errorbar(t[x], 100 * t["val_acc_mean"], yerr=100 * t["val_acc_std"].fillna(0), marker="o",
                    capsize=3, label="validation, mean +- std")
        for xv, accs in zip(t[x], t["val_acc"]):
            ax.scatter([xv] * len(accs), 100 * np.asarray(accs), s=8, color="black", alpha=0.5, zorder=3)
        ax.set(ylabel="final validation accuracy (%)")
    ax2.set_title("Accuracy (dots: single seeds)")
    if zoom:
        top = 100 * t["val_acc_mean"].max()
        axes[2].set_ylim(top - 100 * zoom, top + 100 * zoom / 4)
        axes[2].set_title("Accuracy near the top")
    for ax in axes:
        if log_x:
            _log_axis(ax, t[x])
        ax.set_xlabel(words(x))
        ax.grid(alpha=0.3)
    ax1.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def grid_heatmap(values: pd.DataFrame, text: pd.DataFrame, best: Mapping, close: Sequence[Mapping],
                 title: str, collapsed: float = 100 * CHANCE):
    """A two-parameter study's accuracy (%) per cell, coloured over the plateau the answer lies on.

    `values`, `text`: `words.heatmap_data`'s matrix (rows and columns named by the parameters)
    and each cell's text. The best cell (`best`, a point) gets a thick frame and a star, the
    cells within noise of it (`close`) a dashed one. The colours run from twice as far below the
    lowest within-noise cell as that cell is below the best (so that the set fills the top third
    of the scale) to the highest mean; a cell below that is grey with its number, one below
    `collapsed` (%: chance level, the run settled on about one class) hatched.
    """
    rows, cols = values.index.name, values.columns.name
    v = values.to_numpy(dtype=float)
    cell = lambda p: (int(np.flatnonzero(np.isclose(values.index.to_numpy(float), float(p[rows])))[0]),  # noqa: E731
                      int(np.flatnonzero(np.isclose(values.columns.to_numpy(float), float(p[cols])))[0]))
    bi, bj = cell(best)
    near = [cell(p) for p in close]
    top = np.nanmax(v)
    lowest = min([v[i, j] for i, j in near] + [v[bi, bj]])
    vmin = lowest - 2 * max(v[bi, bj] - lowest, 0.05)
    failed = ~np.isfinite(v) | (v < collapsed)
    colours = plt.get_cmap("viridis").with_extremes(under=BELOW, bad="white")
    norm = matplotlib.colors.Normalize(vmin=vmin, vmax=top)
    fig, ax = plt.subplots(figsize=(2.2 + 1.05 * v.shape[1], 1.6 + 0.66 * v.shape[0]))
    image = ax.imshow(np.ma.masked_array(v, failed), cmap=colours, norm=norm, aspect="auto")
    fig.colorbar(image, ax=ax, extend="min", label="validation accuracy (%)", fraction=0.06, pad=0.03)
    for (i, j), t in np.ndenumerate(text.to_numpy()):
        if failed[i, j]:
            ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, hatch="///", fill=False, edgecolor="0.7", lw=0))
            t = f"collapsed\n{t}"
        rgb = BELOW_RGB if failed[i, j] or v[i, j] < vmin else colours(norm(v[i, j]))[:3]
        dark = np.dot(rgb, (0.299, 0.587, 0.114)) < 0.5
        star = " ★" if (i, j) == (bi, bj) else ""
        ax.text(j, i, str(t).replace("\n", star + "\n", 1) if "\n" in str(t) else f"{t}{star}", ha="center",
                va="center", fontsize=8, color="white" if dark else "black",
                fontweight="bold" if (i, j) == (bi, bj) else "normal")
    for (i, j) in near:
        ax.add_patch(Rectangle((j - 0.45, i - 0.45), 0.9, 0.9, fill=False, edgecolor="black", lw=1.4, ls="--"))
    ax.add_patch(Rectangle((bj - 0.45, bi - 0.45), 0.9, 0.9, fill=False, edgecolor="black", lw=3))
    ax.set_xticks(range(v.shape[1]), [f"{c:g}" for c in values.columns])
    ax.set_yticks(range(v.shape[0]), [f"{r:g}" for r in values.index])
    ax.set_xlabel(words(cols))
    ax.set_ylabel(words(rows))
    ax.set_title(title)
    ax.legend(handles=[Patch(facecolor="none", edgecolor="black", lw=3, label="★ best by mean"),
                       Patch(facecolor="none", edgecolor="black", lw=1.4, ls="--", label="within noise of the best"),
                       Patch(facecolor=BELOW, label=f"below the colour range ({vmin:.2f}%)"),
                       Patch(facecolor="white", edgecolor="0.7", hatch="///",
                             label=f"collapsed (below {collapsed:g}%, chance level)")],
              loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def against_full(joined: pd.DataFrame, names: Sequence[str], rho: float | None, title: str = "",
                 floor: float = 0.9, pick: Mapping | None = None, top: int = 5):
    """Each point's validation accuracy at the study's budget against the full budget's.

    `joined`: proxy.compare_with_full's table; a point is named by its values of `names` (the
    grid's parameters), joined by "/" (peak lr 0.1 with batch 16: "0.1/16"). Left,
    every point; right, zoomed into where the decision is made: the full budget's `top` points
    and `pick` (the study's answer, a point such as StudyResult.best; by default the best mean at
    the study's budget), named there, with the full budget's seed spread (+- 1 std) as bars.
    Points below `floor` at the full budget (runs that collapsed) are left off, named in the title.
    """
    label = "/".join(f"{{{n}:g}}" for n in names)
    joined = joined.assign(label=[label.format(**row) for row in joined[list(names)].to_dict("records")])
    shown = joined[joined["val_acc_mean_full"] >= floor].reset_index(drop=True)
    off = joined[joined["val_acc_mean_full"] < floor]["label"].tolist()
    x, y = 100 * shown["val_acc_mean_full"].to_numpy(float), 100 * shown["val_acc_mean"].to_numpy(float)
    xerr = 100 * shown["val_acc_std"].fillna(0).to_numpy(float)
    is_pick = (_rows_of(shown, [pick]) if pick is not None else y == y.max())
    rank = shown["val_acc_mean_full"].rank(method="min", ascending=False).astype(int).to_numpy()
    is_top = rank <= top   # ties at the cut all count
    named = is_pick | is_top
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11.5, 4.6), gridspec_kw={"wspace": 0.3})
    styles = [("tab:red", "*", 150) if p else ("tab:blue", "o", 36) if t else ("0.6", "o", 16)
              for p, t in zip(is_pick, is_top)]
    for ax in (ax1, ax2):
        for xv, yv, e, (color, marker, size) in zip(x, y, xerr, styles):
            if ax is ax2:
                ax.errorbar(xv, yv, xerr=e, color=color, lw=0.8, capsize=2, zorder=2)
            ax.scatter(xv, yv, s=size, color=color, marker=marker, zorder=4 if color != "0.6" else 3)
        ax.set(xlabel="validation accuracy at the full budget (%)",
               ylabel="validation accuracy at the default budget (%)")
        ax.grid(alpha=0.3)
    x0, x1 = (x - xerr)[named].min(), (x + xerr)[named].max()
    y0, y1 = y[named].min(), y[named].max()
    px, py = 0.12 * (x1 - x0) + 0.02, 0.12 * (y1 - y0) + 0.02
    ax2.set_xlim(x0 - px, x1 + px)
    ax2.set_ylim(y0 - py, y1 + py)
    ax1.add_patch(Rectangle((x0 - px, y0 - py), x1 - x0 + 2 * px, y1 - y0 + 2 * py, fill=False, ls="--", lw=0.8))
    order = np.flatnonzero(named)
    named_as = [shown["label"][i] + (" (chosen)" if is_pick[i] else "")
                + (f", full rank {rank[i]}" if is_top[i] else "") for i in order]
    _side_labels(ax2, x[order], y[order], named_as, ["tab:red" if is_pick[i] else "tab:blue" for i in order])
    ax1.set_title("Every point (dashed: the zoomed region)", fontsize=10)
    ax2.set_title(f"The pick and the full budget's top {top} (bars: ± 1 std over seeds)", fontsize=10)
    ax1.legend(handles=[Line2D([], [], color="tab:red", marker="*", ls="", ms=11, label="chosen at the default budget"),
                        Line2D([], [], color="tab:blue", marker="o", ls="", label=f"full budget's top {top}"),
                        Line2D([], [], color="0.6", marker="o", ls="", ms=4, label="the other points")],
               fontsize=8, loc="lower right")
    corr = "undefined (ties)" if rho is None else f"{rho:.2f}"
    fig.suptitle((title + "\n" if title else "") + f"Spearman rank correlation {corr} (all {len(joined)} points)"
                 + (f"; off the chart (below {100 * floor:.0f}% at the full budget): {', '.join(off)}" if off else ""),
                 fontsize=11)
    fig.subplots_adjust(top=0.84)
    return fig


# what each activation is, in the order a hidden layer computes them
STAGES = {"Linear": ("Linear output (before LayerNorm)", "-", "o"),
          "LayerNorm": ("after LayerNorm", "--", "s"),
          "ReLU": ("after ReLU (the next layer's input)", ":", "^")}


def activation_spread(stats: pd.DataFrame, title: str):
    """Std of the activations layer by layer at initialization, a panel per model, He vs default.

    `stats`: rows of `model.activation_stats(..., outputs=("Linear", "LayerNorm", "ReLU"))` with
    columns `model` and `init`. The last Linear layer's output is the logits. Default-init points
    are hollow and drawn first, so that where the two inits agree both stay visible.
    """
    models = list(dict.fromkeys(stats["model"]))
    fig, axes = plt.subplots(1, len(models), figsize=(5.4 * len(models), 3.9), sharey=True, squeeze=False)
    for ax, arch in zip(axes[0], models):
        mine = stats[stats["model"] == arch]
        for init, color, hollow in (("default", "tab:orange", True), ("he", "tab:blue", False)):
            for kind, (name, ls, marker) in STAGES.items():
                g = mine[(mine["init"] == init) & (mine["output"] == kind)]
                if len(g):
                    ax.plot(g["layer"], g["std"], ls=ls, marker=marker, color=color, ms=8 if hollow else 4.5,
                            mfc="white" if hollow else color, lw=1.8 if kind == "Linear" else 1.1,
                            label=f"{'He' if init == 'he' else 'PyTorch default'} init: {name}")
        n = int(mine.loc[mine["output"] == "Linear", "layer"].max())
        ax.set_xticks(range(1, n + 1), [str(i) for i in range(1, n)] + ["logits"])
        ax.axhline(1.0, color="black", lw=0.6)
        ax.set(xlabel="layer", title=arch, ylim=(0, None))
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("std of the activations (batch of real digits)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.02), ncol=2, fontsize=8, frameon=False)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def seconds_per_epoch(table: pd.DataFrame, x: str, title: str = ""):
    """Wall-clock seconds per model-epoch (training + validation) against one study parameter.

    The line is the mean over seeds. With studies.point_rows' per-seed columns
    `seconds_per_epoch_seeds` and `models_in_stack`, the bars are +- 1 std over seeds and each
    seed is a dot shaped by how many models its stack trained side by side: a stack shares each
    step's fixed cost among its models, so seconds per model fall as the stack grows.
    """
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    t = table[table["n_seeds"] > 0].sort_values(x)
    seeds = "seconds_per_epoch_seeds" in t and "models_in_stack" in t
    yerr = [np.std(s, ddof=1) if len(s) > 1 else 0.0 for s in t["seconds_per_epoch_seeds"]] if seeds else None
    ax.errorbar(t[x], t["seconds_per_epoch"], yerr=yerr, marker="o", capsize=3, color="tab:blue", zorder=2,
                label="mean over seeds" + (", ± 1 std" if seeds else ""))
    if seeds:
        stacks = sorted({int(k) for ks in t["models_in_stack"] for k in ks if k is not None})
        markers = dict(zip(stacks, "sD^vPX<>"))
        for k in stacks:
            pts = [(xv, s) for xv, ss, ks in zip(t[x], t["seconds_per_epoch_seeds"], t["models_in_stack"])
                   for s, kk in zip(ss, ks) if kk == k]
            ax.scatter(*zip(*pts), marker=markers[k], s=28, facecolor="none", edgecolor="black", zorder=3,
                       label=f"one seed, {k} model{'s' if k > 1 else ''} in its stack")
    _log_axis(ax, t[x])
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(mticker.LogLocator(subs=(1, 2, 3, 5)))
    ax.yaxis.set_major_formatter(mticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(mticker.NullFormatter())
    ax.set(xlabel=words(x), ylabel="seconds per model-epoch (log scale)", title=title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return fig


def before_after(files: Sequence, results: Sequence, captions: Sequence[str] | None = None,
                 truths: Sequence[int] | None = None):
    """Each user image as it is on disk (top) and as the model saw it after `predict.preprocess`
    (bottom), titled with its caption (default: the file's name) and the model's confidence.

    `results` are `predict.predict_images`'s, one per file. With `truths` (each image's true
    digit) each title opens with "true 7 → read 7", red where the model read another digit or none.
    """
    from pathlib import Path

    from PIL import Image

    from .predict import preprocess

    captions = captions or [Path(f).name for f in files]
    titles = [c if r.error else f"{c} ({r.probability:.0%})" for c, r in zip(captions, results)]
    wrong = [False] * len(files)
    if truths is not None:
        if len(truths) != len(files):
            raise ValueError(f"before_after: {len(truths)} truths for {len(files)} images")
        wrong = [r.digit is None or r.digit != int(t) for t, r in zip(truths, results)]
        titles = [f"true {int(t)} → read {'none' if r.digit is None else r.digit}\n{s}"
                  for t, r, s in zip(truths, results, titles)]
    fig, axes = plt.subplots(2, len(files), figsize=(1.9 * len(files), 4.3), squeeze=False)
    for i, (f, r, t) in enumerate(zip(files, results, titles)):
        with Image.open(f) as img:
            axes[0, i].imshow(img.convert("RGB"))
        axes[0, i].set_title(t, fontsize=9, color="red" if wrong[i] else "black")
        if r.error is None:
            axes[1, i].imshow(np.asarray(preprocess(f)), cmap="gray", vmin=0, vmax=255)
        axes[1, i].set_title("model input (28×28)" if r.error is None else "no digit found", fontsize=8)
        for ax in axes[:, i]:
            ax.set(xticks=[], yticks=[])
    fig.tight_layout()
    return fig


def readings(images: torch.Tensor, labels: torch.Tensor, preds: torch.Tensor, idx, probs: torch.Tensor | None = None,
             title: str = "", cols: int = 10):
    """Digits `idx` titled "true → predicted" (and the model's confidence, given `probs`), red where wrong."""
    idx = torch.as_tensor(list(idx))
    titles = [f"{int(labels[i])} → {int(preds[i])}" + (f" ({probs[i].max():.0%})" if probs is not None else "")
              for i in idx]
    return digit_grid(images[idx], titles, cols=cols, title=title,
                      title_colors=["black" if labels[i] == preds[i] else "red" for i in idx])


def mistakes(confusion: pd.DataFrame, title: str):
    """A confusion matrix with its diagonal (the digits read right) hidden, so that the mistakes show."""
    import seaborn as sns

    off_diagonal = confusion.where(~np.eye(len(confusion), dtype=bool))
    fig, ax = plt.subplots(figsize=(1.0 + 1.0 * confusion.shape[1], 0.8 + 0.62 * confusion.shape[0]))
    sns.heatmap(off_diagonal, annot=True, fmt=".0f", cmap="rocket_r", ax=ax, annot_kws={"fontsize": 8})
    ax.set(title=title, xlabel="predicted", ylabel="true")
    fig.tight_layout()
    return fig


def lr_schedule(rates: Sequence[float], steps_per_epoch: int, title: str = "Learning rate per step"):
    """The learning rate at every SGD step of a run, with epochs marked on a second axis."""
    fig, ax = plt.subplots(figsize=(8, 3))
    ax.plot(np.arange(1, len(rates) + 1), rates, color="C0")
    ax.set(xlabel="SGD step", ylabel="learning rate", title=title, xlim=(1, len(rates)), ylim=(0, None))
    epochs = ax.secondary_xaxis("top", functions=(lambda s: s / steps_per_epoch, lambda e: e * steps_per_epoch))
    epochs.set_xlabel("epoch")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def first_layer(weights: torch.Tensor, n: int = 32, cols: int = 8,
                title: str = "First-layer weights: what each hidden unit looks for"):
    """The first `n` hidden units' incoming weights as 28x28 images, red positive, blue negative,
    each on its own symmetric scale (units differ in size; the pattern is what they detect)."""
    w = weights[:n].detach().cpu().reshape(-1, 28, 28)
    rows = math.ceil(len(w) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.2 * cols, 1.2 * rows + 0.5))
    for ax, unit in zip(np.ravel(axes), w):
        m = float(unit.abs().max()) or 1.0
        ax.imshow(unit, cmap="RdBu_r", vmin=-m, vmax=m)
    for ax in np.ravel(axes):
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def augmented(images: torch.Tensor, versions: Sequence[torch.Tensor], names: Sequence[str],
              title: str = "Training digits and augmented versions of them"):
    """One row per digit: the digit as stored, then one column per augmented version (uint8 [N, 28, 28] each)."""
    columns = [images, *versions]
    fig, axes = plt.subplots(len(images), len(columns), figsize=(1.2 * len(columns), 1.25 * len(images) + 0.4),
                             squeeze=False)
    for c, (batch, name) in enumerate(zip(columns, ["as stored", *names])):
        for r in range(len(images)):
            ax = axes[r][c]
            ax.imshow(np.asarray(batch[r]).reshape(28, 28), cmap="gray_r", vmin=0, vmax=255)
            ax.set(xticks=[], yticks=[])
            if r == 0:
                ax.set_title(name, fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig
