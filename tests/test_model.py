"""The MLP: logits out, fit/predict, He init, bad settings, checkpoints."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from helpers import data, model as M
from helpers.params import ParameterError


def test_architecture_and_logits():
    torch.manual_seed(0)
    m = M.MLP()
    kinds = [type(layer).__name__ for layer in m.net]
    assert kinds == ["Linear", "LayerNorm", "ReLU", "Dropout"] * 2 + ["Linear"]
    assert [layer.p for layer in m.net if isinstance(layer, nn.Dropout)] == [0.15, 0.2]
    x = torch.randn(5, 784)
    out = m.eval()(x)
    assert out.shape == (5, 10)
    # logits, not probabilities: rows do not sum to one, predict_proba's do
    assert not torch.allclose(out.sum(1), torch.ones(5))
    assert torch.allclose(m.predict_proba(x).sum(1), torch.ones(5))
    assert torch.equal(m.predict(x), out.argmax(1))
    assert sum(r["parameters"] for r in M.parameter_table(m)) == sum(p.numel() for p in m.parameters())


def test_he_init_keeps_variance():
    torch.manual_seed(0)
    he = M.MLP((512, 512), (0.0, 0.0), init="he")
    torch.manual_seed(0)
    default = M.MLP((512, 512), (0.0, 0.0), init="default")
    w_he, w_default = he.net[0].weight, default.net[0].weight
    assert w_he.var().item() == pytest.approx(2 / 784, rel=0.05)
    assert w_default.var().item() == pytest.approx(1 / (3 * 784), rel=0.05)
    assert torch.all(he.net[0].bias == 0)
    # an input from its own generator: the global stream just produced the weights
    x = torch.randn(256, 784, generator=torch.Generator().manual_seed(1))
    stats = M.activation_stats(he, x)
    assert [r["output"] for r in stats] == ["Linear", "ReLU", "Linear", "ReLU", "Linear"]
    assert stats[0]["std"] == pytest.approx(2 ** 0.5, rel=0.1)


def test_fit_steps_and_predict_restores_mode():
    torch.manual_seed(0)
    m = M.MLP(lr=0.1)
    x, y = torch.randn(64, 784), torch.randint(0, 10, (64,))
    losses = [m.fit(x, y) for _ in range(30)]
    assert isinstance(losses[0], float) and losses[-1] < losses[0] / 2
    m.predict(x)
    assert m.training  # predict switched to eval and back
    m.eval()
    m.fit(x, y)
    assert m.training  # a step always trains with dropout on


def test_optimizer_can_be_replaced():
    m = M.MLP()
    opt = m.configure_optimizer(lr=0.3, momentum=0.0, weight_decay=0.0)
    assert m.optimizer is opt and opt.param_groups[0]["lr"] == 0.3
    m.optimizer = torch.optim.Adam(m.parameters(), lr=1e-3)
    m.fit(torch.randn(8, 784), torch.zeros(8, dtype=torch.long))


@pytest.mark.parametrize("kwargs, match", [
    ({"hidden": []}, "parameter 'hidden'"),
    ({"hidden": [64, -1], "dropout": [0.1, 0.1]}, r"hidden\[1\]"),
    ({"dropout": [0.15, 1.0]}, r"dropout\[1\]"),
    ({"dropout": [0.15]}, "one rate per hidden layer"),
    ({"lr": 0.0}, "parameter 'lr'"),
    ({"lr": float("nan")}, "parameter 'lr'"),
    ({"lr": "0.1"}, "parameter 'lr'"),
    ({"momentum": 1.5}, "parameter 'momentum'"),
    ({"weight_decay": -1e-5}, "parameter 'weight_decay'"),
])
def test_bad_settings_stop_before_training(kwargs, match):
    with pytest.raises(ParameterError, match=match):
        M.MLP(**kwargs)


def test_checkpoint_round_trip_is_self_contained(tmp_path):
    torch.manual_seed(0)
    m = M.MLP((32, 16), (0.1, 0.1))
    norm = data.Normalization(0.5, 0.25)
    path = M.save_checkpoint(tmp_path / "m.pt", m, norm, note="x")
    blob = torch.load(path, weights_only=True)  # plain tensors and containers only
    assert blob["model_config"]["hidden"] == [32, 16] and blob["normalization"] == {"mean": 0.5, "std": 0.25}
    loaded, loaded_norm, _ = M.load_checkpoint(path)
    x = torch.randn(4, 784)
    assert torch.equal(loaded(x), m.eval()(x)) and loaded_norm == norm
    assert not list(tmp_path.glob("*.part"))


def test_corrupt_truncated_and_mismatched_checkpoints(tmp_path):
    m = M.MLP((32, 16), (0.1, 0.1))
    path = M.save_checkpoint(tmp_path / "m.pt", m, data.Normalization())
    raw = path.read_bytes()
    (tmp_path / "trunc.pt").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(M.CheckpointError, match=r"trunc\.pt: not a readable checkpoint"):
        M.load_checkpoint(tmp_path / "trunc.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(M.CheckpointError, match=r"junk\.pt: not a readable checkpoint"):
        M.load_checkpoint(tmp_path / "junk.pt")
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(M.CheckpointError, match=r"other\.pt: not a mnist-mlp-checkpoint"):
        M.load_checkpoint(tmp_path / "other.pt")
    blob = torch.load(path, weights_only=True)
    blob["model_config"]["hidden"] = [64, 16]
    torch.save(blob, tmp_path / "mismatch.pt")
    with pytest.raises(M.CheckpointError, match=r"mismatch\.pt: weights do not match"):
        M.load_checkpoint(tmp_path / "mismatch.pt")
    with pytest.raises(M.CheckpointError, match="no such checkpoint"):
        M.load_checkpoint(tmp_path / "absent.pt")


def test_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    m = M.MLP((32, 16), (0.1, 0.1))
    path = M.save_checkpoint(tmp_path / "m.pt", m, data.Normalization())
    before = path.read_bytes()

    def broken_save(obj, f):
        open(f, "wb").write(b"half")
        raise OSError("disk full")
    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        M.save_checkpoint(path, m, data.Normalization())
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]


def test_an_ensemble_averages_its_members_and_saves_as_one_file(tmp_path):
    members = [M.MLP((32, 16), (0.1, 0.1), seed=s) for s in (0, 1, 2)]
    ensemble = M.Ensemble(members)
    x = torch.randn(7, 784)
    expected = torch.stack([m.predict_proba(x) for m in members]).mean(0)
    assert torch.allclose(ensemble.predict_proba(x), expected)
    assert ensemble.config["seeds"] == [0, 1, 2] and ensemble.config["ensemble_of"] == 3
    path = M.save_checkpoint(tmp_path / "ens.pt", ensemble, data.Normalization(), recipe={"epochs": 1})
    back, norm, blob = M.load_checkpoint(path)
    assert isinstance(back, M.Ensemble) and len(back.members) == 3
    assert torch.allclose(back.predict_proba(x), expected)
    assert blob["meta"]["recipe"] == {"epochs": 1}
    torch.save({"format": M.CHECKPOINT_FORMAT, "members": [], "normalization": {}}, tmp_path / "empty.pt")
    with pytest.raises(ValueError, match="at least one model"):
        M.load_checkpoint(tmp_path / "empty.pt")


def test_a_models_randomness_comes_from_its_seed_alone():
    a, b = M.MLP(seed=3), M.MLP(seed=3)
    torch.manual_seed(123)  # the global generator plays no part
    x = torch.randn(16, 784)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert torch.equal(a.train()(x), b.train()(x)), "same dropout masks"
    assert not torch.equal(M.MLP(seed=4).net[0].weight, a.net[0].weight)
