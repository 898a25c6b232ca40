"""Figures: one function per kind of plot; each returns its Figure, `save` writes it to figures/.

Saved at a modest resolution (dpi 80) so the executed notebooks, which embed them, stay small.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import matplotlib

import matplotlib.pyplot as plt
import numpy as np
import torch

from . import paths, store

DPI = 80


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


def class_distribution(counts: "pd.DataFrame"):  # noqa: F821
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
    """Loss and accuracy per epoch, train vs validation: the mean over seeds with a +- std band."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.5))
    epochs = np.arange(1, len(histories[0]) + 1)
    for key, label in (("train", "train (dropout, augmentation on)"), ("val", "validation")):
        for ax, metric, scale in ((ax1, "loss", 1), (ax2, "acc", 100)):
            values = scale * np.array([[r[f"{key}_{metric}"] for r in h] for h in histories], dtype=float)
            mean = values.mean(0)
            line, = ax.plot(epochs, mean, marker=".", label=label)
            if len(values) > 1:
                std = values.std(0, ddof=1)
                ax.fill_between(epochs, mean - std, mean + std, color=line.get_color(), alpha=0.2, linewidth=0)
    ax1.set(xlabel="epoch", ylabel="cross-entropy loss (smoothed targets)", title="Loss")
    ax2.set(xlabel="epoch", ylabel="accuracy (%)", title="Accuracy")
    ax2.set_ylim(max(ax2.get_ylim()[0], 95), 100)
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title + (f" (mean of {len(histories)} seeds, band: +- 1 std)" if len(histories) > 1 else ""))
    fig.tight_layout()
    return fig


def curves_band(table: "pd.DataFrame", label: str, legend_title: str = "", title: str = "",  # noqa: F821
                fmt: str = "{:g}"):
    """Validation accuracy per epoch, one line per study point: the mean over seeds, +- std band."""
    fig, ax = plt.subplots(figsize=(7, 4))
    rows = table[table["n_seeds"] > 0]
    colors = plt.cm.viridis(np.linspace(0, 0.95, max(len(rows), 1)))
    for color, (_, r) in zip(colors, rows.iterrows()):
        mean = 100 * np.asarray(r["curve_mean"], dtype=float)
        std = 100 * np.asarray(r["curve_std"], dtype=float)
        epochs = np.arange(1, len(mean) + 1)
        ax.plot(epochs, mean, marker=".", color=color, label=fmt.format(r[label]))
        if np.isfinite(std).all():
            ax.fill_between(epochs, mean - std, mean + std, color=color, alpha=0.2, linewidth=0)
    n = int(rows["n_seeds"].max()) if len(rows) else 0
    ax.set(xlabel="epoch", ylabel="validation accuracy (%)",
           title=title + (f"\n(mean of {n} seeds, band: +- 1 std)" if n > 1 else ""))
    ax.grid(alpha=0.3)
    ax.legend(title=legend_title, fontsize=8, ncol=2)
    return fig


def final_metrics(table: "pd.DataFrame", x: str, log_x: bool = True, title: str = "",  # noqa: F821
                  zoom: float | None = None):
    """Final validation accuracy (mean +- std over seeds, each seed a dot) and loss against `x`.

    `zoom`: also a right-hand panel of accuracy limited to the `zoom` points below the best, where
    the differences that decide the answer are.
    """
    t = table[table["n_seeds"] > 0].sort_values(x)
    panels = 3 if zoom else 2
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 3.6))
    ax1, ax2 = axes[0], axes[1]
    ax1.plot(t[x], t["val_loss_mean"], marker="o", label="validation")
    ax1.plot(t[x], t["train_loss_mean"], marker="o", label="train (dropout on)")
    ax1.set(xlabel=x, ylabel="final loss (mean over seeds)", title="Loss")
    for ax in axes[1:]:
        ax.errorbar(t[x], 100 * t["val_acc_mean"], yerr=100 * t["val_acc_std"].fillna(0), marker="o",
                    capsize=3, label="validation, mean +- std")
        for xv, accs in zip(t[x], t["val_acc"]):
            ax.scatter([xv] * len(accs), 100 * np.asarray(accs), s=8, color="black", alpha=0.5, zorder=3)
        ax.set(xlabel=x, ylabel="final validation accuracy (%)")
    ax2.set_title("Accuracy (dots: single seeds)")
    if zoom:
        top = 100 * t["val_acc_mean"].max()
        axes[2].set_ylim(top - 100 * zoom, top + 100 * zoom / 4)
        axes[2].set_title("Accuracy near the top")
    for ax in axes:
        if log_x:
            ax.set_xscale("log")
        ax.grid(alpha=0.3)
    ax1.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def heatmap(matrix: "pd.DataFrame", title: str, fmt: str = ".2f", cmap: str = "viridis",  # noqa: F821
            xlabel: str | None = None, ylabel: str | None = None, vmin: float | None = None,
            annot: "pd.DataFrame | None" = None):  # noqa: F821
    """A seaborn heatmap of a 2-D table (e.g. validation accuracy by lr x batch size).

    `vmin` clips the colour scale from below, so a few failed cells do not wash out the
    differences between the good ones (their numbers are still printed). `annot`: the text of
    each cell (e.g. "98.31\n±0.05"), else the values formatted with `fmt`.
    """
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(1.0 + 1.0 * matrix.shape[1], 0.8 + 0.62 * matrix.shape[0]))
    labels = annot.to_numpy() if annot is not None else True
    sns.heatmap(matrix, annot=labels, fmt="" if annot is not None else fmt, cmap=cmap, ax=ax, cbar=True,
                annot_kws={"fontsize": 8}, vmin=vmin)
    ax.set_title(title)
    ax.set_xlabel(xlabel or matrix.columns.name or "")
    ax.set_ylabel(ylabel or matrix.index.name or "")
    fig.tight_layout()
    return fig


def against_full(joined: "pd.DataFrame", label: str, rho: float | None, title: str = "",  # noqa: F821
                 floor: float = 0.9):
    """Each point's validation accuracy at the study's budget against the full budget's.

    Points below `floor` at the full budget (runs that collapsed) are left off the chart, named
    in the title, so that they do not squeeze the points that matter into a corner.
    """
    fig, ax = plt.subplots(figsize=(5.4, 4.6))
    shown = joined[joined["val_acc_mean_full"] >= floor]
    off = joined[joined["val_acc_mean_full"] < floor][label].tolist()
    x, y = 100 * shown["val_acc_mean_full"], 100 * shown["val_acc_mean"]
    ax.scatter(x, y, s=18)
    for xv, yv, text in zip(x, y, shown[label]):
        ax.annotate(text, (xv, yv), fontsize=7, xytext=(3, 2), textcoords="offset points")
    corr = "undefined (ties)" if rho is None else f"{rho:.2f}"
    ax.set(xlabel="full budget: validation accuracy (%)", ylabel="this budget: validation accuracy (%)",
           title=(title + "\n" if title else "") + f"Spearman rank correlation {corr} (all {len(joined)} points)"
           + (f"\noff the chart (below {100 * floor:.0f}% at full budget): {', '.join(off)}" if off else ""))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def activation_spread(stats: "pd.DataFrame", title: str):  # noqa: F821
    """Std of each layer's Linear output, one line per (initialization, model) pair."""
    fig, ax = plt.subplots(figsize=(7, 3.5))
    linear = stats[stats["output"] == "Linear"]
    for (init, arch), group in linear.groupby(["init", "model"], sort=False):
        ax.plot(group["layer"], group["std"], marker="o",
                linestyle="-" if init == "he" else "--", label=f"{arch}, {init} init")
    ax.set_yscale("log")
    ax.set(xlabel="Linear layer", ylabel="std of its output (log)", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def seconds_per_epoch(table: "pd.DataFrame", x: str, title: str = ""):  # noqa: F821
    """Wall-clock seconds per model-epoch (training + validation) against one study parameter."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    t = table[table["n_seeds"] > 0].sort_values(x)
    ax.plot(t[x], t["seconds_per_epoch"], marker="o")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set(xlabel=x, ylabel="seconds per model-epoch (log)", title=title)
    ax.grid(alpha=0.3, which="both")
    return fig


def before_after(files: Sequence, processed: Sequence[torch.Tensor], titles: Sequence[str]):
    """Each user image as it is on disk (top) and as the model sees it after preprocessing (bottom)."""
    from PIL import Image

    fig, axes = plt.subplots(2, len(files), figsize=(2.0 * len(files), 4.2), squeeze=False)
    for i, (f, p, t) in enumerate(zip(files, processed, titles)):
        with Image.open(f) as img:
            axes[0, i].imshow(img.convert("RGB"))
        axes[0, i].set_title(t, fontsize=9)
        axes[1, i].imshow(np.asarray(p), cmap="gray", vmin=0, vmax=255)
        axes[1, i].set_title("model input (28×28)", fontsize=8)
        for ax in axes[:, i]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    return fig
