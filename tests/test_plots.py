"""Every figure function draws from a tiny synthetic table: no data, no training."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from helpers import model as M, plots  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def sweep(values, name="lr", epochs=4):
    """A study table as studies.point_rows gives it: one row per point, three seeds."""
    rng = np.random.default_rng(0)
    rows = []
    for k, v in enumerate(values):
        final = 0.9 + 0.01 * k
        curves = np.clip(final - 0.2 / np.arange(1, epochs + 1)[None] + 0.002 * rng.standard_normal((3, epochs)), 0, 1)
        accs = curves[:, -1]
        rows.append({name: v, "n_seeds": 3, "val_acc": accs.tolist(), "val_acc_mean": accs.mean(),
                     "val_acc_std": accs.std(ddof=1), "val_loss_mean": 0.3 - 0.01 * k, "train_loss_mean": 0.2,
                     "seconds_per_epoch": 1.0 / (k + 1), "curve_mean": curves.mean(0).tolist(),
                     "curve_std": curves.std(0, ddof=1).tolist()})
    return pd.DataFrame(rows)


def test_words_name_the_study_parameters():
    assert plots.words("lr") == "peak learning rate"
    assert plots.words("batch_size").startswith("batch size")
    assert plots.words("some_thing") == "some thing"


def test_against_full_names_the_pick_and_the_full_top_and_leaves_collapsed_runs_off():
    joined = pd.DataFrame({"lr": [0.001, 0.01, 0.1, 0.3, 0.5, 1.0, 3.0],
                           "val_acc_mean": [0.90, 0.95, 0.97, 0.965, 0.96, 0.94, 0.11], "n_seeds": 3,
                           "val_acc_mean_full": [0.95, 0.975, 0.982, 0.983, 0.981, 0.97, 0.11],
                           "val_acc_std": [0.001] * 6 + [np.nan], "n_seeds_full": 3})
    fig = plots.against_full(joined, ["lr"], 0.9, title="t", pick={"lr": 0.1, "val_acc_mean": 0.97})
    assert isinstance(fig, matplotlib.figure.Figure)
    zoom = fig.axes[1]
    named = [t.get_text() for t in zoom.texts]
    assert "0.1 (chosen), full rank 2" in named and "0.3, full rank 1" in named
    assert not any(t.startswith("0.001") for t in named)   # not among the top 5: unlabelled
    assert "off the chart" in fig._suptitle.get_text() and "3" in fig._suptitle.get_text()
    assert zoom.get_xlabel() == "validation accuracy at the full budget (%)"
    pairs = joined.assign(batch_size=16)
    assert "0.1/16 (chosen), full rank 2" in [t.get_text() for t in plots.against_full(
        pairs, ["lr", "batch_size"], 0.9, pick={"lr": 0.1, "batch_size": 16}).axes[1].texts]


def test_curves_band_highlights_and_zooms():
    table = sweep([0.001, 0.01, 0.1, 0.3])
    fig = plots.curves_band(table, "lr", legend_title="peak lr", title="t", best={"lr": 0.3}, close=[{"lr": 0.1}])
    full, zoom = fig.axes[:2]
    colours = [matplotlib.colors.to_hex(line.get_color()) for line in full.get_lines()]
    assert colours.count(matplotlib.colors.to_hex("tab:red")) == 1
    assert zoom.get_xlim()[0] > 1   # the zoom starts late
    assert plots.curves_band(table, "lr") is not None   # no highlight given: the best final mean


def test_final_metrics_axes_in_words():
    fig = plots.final_metrics(sweep([8, 16, 32], name="batch_size"), "batch_size", zoom=0.01)
    assert all(ax.get_xlabel() == "batch size (digits per step)" for ax in fig.axes)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["8", "16", "32"]


def test_training_band_shows_every_epoch_and_a_zoom():
    hist = [[{"train_loss": 1 / e, "val_loss": 0.8 / e, "train_acc": 1 - 0.3 / e + 0.001 * s,
              "val_acc": 1 - 0.1 / e} for e in range(1, 9)] for s in range(2)]
    fig = plots.training_band(hist, "t")
    every, zoom = fig.axes[1], fig.axes[2]
    assert every.get_ylim()[0] < 100 * (1 - 0.3)   # the training curve's first epoch is on the chart
    assert zoom.get_xlim()[0] > 4


def test_grid_heatmap_marks_best_close_and_collapsed():
    values = pd.DataFrame([[96.0, 96.5, 11.2], [90.0, 96.8, 96.7]], index=pd.Index([0.01, 0.1], name="lr"),
                          columns=pd.Index([8, 16, 32], name="batch_size"))
    text = values.map(lambda v: f"{v:.2f}\n±0.10")
    fig = plots.grid_heatmap(values, text, {"lr": 0.1, "batch_size": 16, "val_acc_mean": 0.968},
                             [{"lr": 0.1, "batch_size": 32}, {"lr": 0.01, "batch_size": 16}], "t")
    ax = fig.axes[0]
    cells = [t.get_text() for t in ax.texts]
    assert "collapsed\n11.20\n±0.10" in cells
    assert "96.80 ★\n±0.10" in cells
    frames = [p for p in ax.patches if isinstance(p, matplotlib.patches.Rectangle) and p.get_fill() is False]
    assert sum(p.get_linewidth() == 3 for p in frames) == 1 and sum(p.get_linestyle() == "--" for p in frames) == 2
    assert ax.get_xlabel() == "batch size (digits per step)" and ax.get_ylabel() == "peak learning rate"


def test_mistakes_draws_a_confusion_matrix_without_its_diagonal():
    cm = pd.DataFrame(np.arange(9.0).reshape(3, 3))
    fig = plots.mistakes(cm, "t")
    assert isinstance(fig, matplotlib.figure.Figure)
    ax = fig.axes[0]
    assert sorted(t.get_text() for t in ax.texts) == ["1", "2", "3", "5", "6", "7"]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("predicted", "true")


def test_seconds_per_epoch_with_and_without_seeds():
    table = sweep([8, 16, 32], name="batch_size")
    plain = plots.seconds_per_epoch(table, "batch_size")
    assert "±" not in " ".join(t.get_text() for t in plain.axes[0].get_legend().get_texts())
    table["seconds_per_epoch_seeds"] = [[s * 0.9, s, s * 1.1] for s in table["seconds_per_epoch"]]
    table["models_in_stack"] = [[6, 6, 6], [2, 2, 1], [1, 1, 1]]
    fig = plots.seconds_per_epoch(table, "batch_size")
    legend = " ".join(t.get_text() for t in fig.axes[0].get_legend().get_texts())
    assert "6 models in its stack" in legend and "1 model in its stack" in legend
    assert "×10" not in " ".join(t.get_text() for t in fig.axes[0].get_yticklabels())


def test_activation_spread_shows_layernorm_restoring_the_scale():
    x = torch.randn(64, 784, generator=torch.Generator().manual_seed(0))
    rows = []
    for init in ("he", "default"):
        net = M.MLP([32, 16], [0.0, 0.0], init=init, seed=0)
        rows += [{"model": "2 hidden", "init": init, **r}
                 for r in M.activation_stats(net, x, outputs=("Linear", "LayerNorm", "ReLU"))]
    stats = pd.DataFrame(rows)
    after = stats[stats["output"] == "LayerNorm"]
    assert after["std"].to_numpy() == pytest.approx(1.0, abs=0.02)
    fig = plots.activation_spread(stats, "t")
    assert len(fig.axes[0].get_lines()) == 2 * 3 + 1   # 2 inits x 3 stages, and the unit line


def test_before_after_titles_carry_the_truth(tmp_path):
    from helpers.predict import Prediction

    files = []
    for i in range(2):
        page = Image.new("RGB", (40, 40), "white")
        page.paste((0, 0, 0), (14, 8, 26, 32))   # a bar of ink: something preprocess reads
        page.save(tmp_path / f"{i}.png")
        files.append(tmp_path / f"{i}.png")
    results = [Prediction(str(files[0]), 7, 0.9), Prediction(str(files[1]), 5, 0.6)]
    fig = plots.before_after(files, results, ["a", "b"], truths=[7, 3])
    titles = [fig.axes[0].title, fig.axes[1].title]   # the top row: the images as on disk
    assert titles[0].get_text() == "true 7 → read 7\na (90%)" and titles[0].get_color() == "black"
    assert titles[1].get_text() == "true 3 → read 5\nb (60%)" and titles[1].get_color() == "red"
    with pytest.raises(ValueError):
        plots.before_after(files, results, ["a", "b"], truths=[7])
    assert plots.before_after(files, results).axes[0].title.get_text() == "0.png (90%)"
    refused = [Prediction(str(files[0]), None, None, "no digit found")] * 2
    assert plots.before_after(files, refused, truths=[1, 1]).axes[0].title.get_text() == "true 1 → read none\n0.png"


def test_readings_title_each_digit_true_then_predicted_red_where_wrong():
    images = torch.zeros(3, 28, 28, dtype=torch.uint8)
    labels, preds = torch.tensor([1, 2, 3]), torch.tensor([1, 5, 3])
    probs = torch.tensor([[0.0, 0.9], [0.2, 0.8], [0.5, 0.5]])
    fig = plots.readings(images, labels, preds, [0, 1], probs=probs)
    shown = [ax.title for ax in fig.axes if ax.title.get_text()]
    assert [t.get_text() for t in shown] == ["1 → 1 (90%)", "2 → 5 (80%)"]
    assert [t.get_color() for t in shown] == ["black", "red"]


def test_saved_figures_stay_small():
    fig = plots.curves_band(sweep([0.001, 0.01, 0.1, 0.3]), "lr", best={"lr": 0.3})
    plots.save(fig, "curves")
    assert (plots.paths.figures_dir() / "curves.png").stat().st_size < 200_000
