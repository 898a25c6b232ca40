"""Training: learning, determinism, resume equivalence, divergence, bad settings."""
from __future__ import annotations

import pytest
import torch

from helpers import data, model as M, train as T
from helpers.params import ParameterError


def _run(prepared, epochs=3, seed=0, checkpoint=None, resume=False, on_epoch=None, lr=0.05, shift=0):
    T.seed_everything(seed)
    model = M.MLP((32, 16), (0.1, 0.1), lr=lr)
    tl, vl = prepared.loaders(batch_size=32, seed=seed)
    history = T.fit(model, tl, vl, epochs, checkpoint=checkpoint, resume=resume, on_epoch=on_epoch,
                    augment=data.RandomShift(shift) if shift else None, log=lambda s: None)
    return model, history


def test_fit_learns_and_reports_history(small_prepared):
    model, history = _run(small_prepared, epochs=4)
    assert [r["epoch"] for r in history] == [1, 2, 3, 4]
    assert set(history[0]) == {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"}
    assert history[-1]["val_acc"] > 0.9


def test_same_seed_same_numbers(small_prepared):
    m1, h1 = _run(small_prepared, seed=5)
    m2, h2 = _run(small_prepared, seed=5)
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert strip(h1) == strip(h2)
    for a, b in zip(m1.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(a, b)
    _, h3 = _run(small_prepared, seed=6)
    assert strip(h3) != strip(h1)


@pytest.mark.parametrize("shift", [0, 2])
def test_resume_ends_with_the_same_weights(small_prepared, tmp_path, shift):
    full, full_history = _run(small_prepared, epochs=4, shift=shift)

    class Interrupted(Exception):
        pass

    def stop_after_two(row):
        if row["epoch"] == 2:
            raise Interrupted
    ckpt = tmp_path / "run.pt"
    with pytest.raises(Interrupted):
        _run(small_prepared, epochs=4, checkpoint=ckpt, on_epoch=stop_after_two, shift=shift)
    # fresh objects, as after a crash: everything comes from the checkpoint
    torch.manual_seed(12345)
    resumed, history = _run(small_prepared, epochs=4, checkpoint=ckpt, resume=True, shift=shift)
    assert len(history) == 4
    for a, b in zip(full.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)
    assert [r["val_acc"] for r in history] == [r["val_acc"] for r in full_history]


def test_resume_refuses_a_different_run(small_prepared, tmp_path):
    ckpt = tmp_path / "run.pt"
    _run(small_prepared, epochs=2, checkpoint=ckpt)
    with pytest.raises(M.CheckpointError, match="different run.*epochs"):
        _run(small_prepared, epochs=3, checkpoint=ckpt, resume=True)


def test_non_finite_loss_names_epoch_and_step(small_prepared):
    with pytest.raises(T.TrainingDiverged, match=r"epoch 1, step \d+"):
        _run(small_prepared, epochs=2, lr=1e6)


def test_bad_run_settings_stop_before_training(small_prepared):
    model = M.MLP((32, 16), (0.1, 0.1))
    before = [p.clone() for p in model.parameters()]
    tl, vl = small_prepared.loaders(batch_size=32, seed=0)
    with pytest.raises(ParameterError, match="parameter 'epochs'"):
        T.fit(model, tl, vl, 0)
    with pytest.raises(ParameterError, match="parameter 'resume'"):
        T.fit(model, tl, vl, 1, resume="false")
    with pytest.raises(ParameterError, match="parameter 'schedule'"):
        T.fit(model, tl, vl, 1, schedule="cosine")
    big, _ = small_prepared.loaders(batch_size=10_000, seed=0)
    with pytest.raises(ParameterError, match="parameter 'batch_size'"):
        T.fit(model, big, vl, 1)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


@pytest.mark.parametrize("settings, match", [
    ({"lr": 0}, "parameter 'lr'"),
    ({"lr": -0.1}, "parameter 'lr'"),
    ({"lr": float("inf")}, "parameter 'lr'"),
    ({"batch_size": 0}, "parameter 'batch_size'"),
    ({"batch_size": 1001}, r"parameter 'batch_size'.*<= 1000"),
    ({"epochs": 0}, "parameter 'epochs'"),
    ({"dropout": [0.1, 1.0]}, r"parameter 'dropout\[1\]'"),
    ({"dropout": [-0.1]}, r"parameter 'dropout\[0\]'"),
    ({"hidden": []}, "parameter 'hidden'"),
    ({"hidden": [128, 0]}, r"parameter 'hidden\[1\]'"),
    ({"hidden": [64, 32], "dropout": [0.1]}, "one rate per hidden layer"),
    ({"schedule": "cosine"}, "parameter 'schedule'"),
    ({"seed": -1}, "parameter 'seed'"),
])
def test_check_settings_names_the_bad_parameter(settings, match):
    with pytest.raises(ParameterError, match=match):
        T.check_settings(1000, **settings)


def test_check_settings_returns_clean_values():
    out = T.check_settings(1000, epochs=3, hidden=(64, 32), dropout=[0.1, 0.2], workers=0)
    assert out["hidden"] == [64, 32] and out["epochs"] == 3 and out["workers"] >= 1
    with pytest.raises(TypeError, match="no check for"):
        T.check_settings(1000, colour="red")


def test_the_loop_written_out_in_03_is_what_fit_runs(small_prepared):
    """03 shows one epoch's loop in plain sight; run as written, it ends with T.fit's weights, bit for bit."""
    import json
    from types import SimpleNamespace

    from helpers import model as M, paths, train as T

    cells = json.loads((paths.NOTEBOOKS / "03_training.ipynb").read_text())["cells"]
    loop = ["".join(c["source"]) for c in cells if c["cell_type"] == "code" and "by_hand.optimizer.step()" in "".join(c["source"])]
    assert len(loop) == 1, "03 should write the epoch's loop out in exactly one cell"
    settings = dict(seed=3, hidden=[32, 16], dropout=[0.1, 0.2], lr=0.05, momentum=0.9, weight_decay=1e-4,
                    batch_size=50, schedule="onecycle")
    val_loader = small_prepared.loaders(50, 3)[1]
    space = {"settings": settings, "run": SimpleNamespace(**settings), "M": M, "T": T, "torch": torch,
             "prepared": small_prepared, "device": torch.device("cpu"),
             "val_loader": val_loader, "print": lambda *a, **k: None}
    exec(loop[0], space)
    T.seed_everything(3)
    reference = M.MLP([32, 16], [0.1, 0.2], lr=0.05, momentum=0.9, weight_decay=1e-4, seed=3)
    T.fit(reference, small_prepared.loaders(50, 3)[0], val_loader, 1, progress=False, log=lambda line: None)
    for (name, a), b in zip(space["by_hand"].state_dict().items(), reference.state_dict().values()):
        assert torch.equal(a, b), name
