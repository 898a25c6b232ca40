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


def curves_overlay(histories: Mapping[str, Sequence[Mapping]], metric: str = "val_acc",
                   legend_title: str = "", title: str = ""):
    """One line per study point: `metric` per epoch."""
    fig, ax = plt.subplots(figsize=(7, 4))
    colors = plt.cm.viridis(np.linspace(0, 0.95, max(len(histories), 1)))
    for color, (label, history) in zip(colors, histories.items()):
        ys = [r[metric] * (100 if metric.endswith("acc") else 1) for r in history]
        ax.plot([r["epoch"] for r in history], ys, marker=".", color=color, label=label)
    ax.set(xlabel="epoch", ylabel=metric.replace("_", " ") + (" (%)" if metric.endswith("acc") else ""),
           title=title)
    ax.grid(alpha=0.3)
    ax.legend(title=legend_title, fontsize=8, ncol=2)
    return fig


def final_metrics(table: "pd.DataFrame", x: str, log_x: bool = True, title: str = ""):  # noqa: F821
    """Final train/validation loss and accuracy against one study parameter."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.5))
    t = table.sort_values(x)
    for split, label in (("train", "train"), ("val", "validation")):
        ax1.plot(t[x], t[f"{split}_loss"], marker="o", label=label)
        ax2.plot(t[x], 100 * t[f"{split}_acc"], marker="o", label=label)
    ax1.set(xlabel=x, ylabel="final loss", title="Loss")
    ax2.set(xlabel=x, ylabel="final accuracy (%)", title="Accuracy")
    for ax in (ax1, ax2):
        if log_x:
            ax.set_xscale("log")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def heatmap(matrix: "pd.DataFrame", title: str, fmt: str = ".2f", cmap: str = "viridis",
            xlabel: str | None = None, ylabel: str | None = None, vmin: float | None = None):
    """A seaborn heatmap of a 2-D table (e.g. validation accuracy by lr x batch size).

    `vmin` clips the colour scale from below, so a few failed cells do not wash out the
    differences between the good ones (their numbers are still printed).
    """
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(1.0 + 0.9 * matrix.shape[1], 0.8 + 0.55 * matrix.shape[0]))
    sns.heatmap(matrix, annot=True, fmt=fmt, cmap=cmap, ax=ax, cbar=True, annot_kws={"fontsize": 8}, vmin=vmin)
    ax.set_title(title)
    ax.set_xlabel(xlabel or matrix.columns.name or "")
    ax.set_ylabel(ylabel or matrix.index.name or "")
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
    """Wall-clock seconds per epoch (training + validation) against one study parameter."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    t = table.sort_values(x)
    ax.plot(t[x], t["seconds_per_epoch"], marker="o")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set(xlabel=x, ylabel="seconds per epoch (log)", title=title)
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
