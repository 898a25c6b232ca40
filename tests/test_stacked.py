"""K models trained as one stack end where each would end trained alone by `train.fit`."""
from __future__ import annotations

import pytest
import torch

from helpers import bench, data, stacked as S, train as T
from helpers.model import MLP

try:
    from .conftest import synthetic_digits
except ImportError:
    from conftest import synthetic_digits


@pytest.fixture(scope="module")
def prepared() -> data.Prepared:
    images, labels = synthetic_digits(800, seed=3)
    train_idx, val_idx = data.split_indices(labels, 0.25, 0)
    return data.Prepared(images, labels, train_idx, val_idx, "synthetic")


def alone(prepared, member, epochs, batch_size, **settings) -> tuple[MLP, list[dict]]:
    model = MLP(settings["hidden"], settings["dropout"], lr=member.lr, momentum=settings["momentum"],
                weight_decay=settings["weight_decay"], nesterov=settings.get("nesterov", False),
                label_smoothing=settings.get("label_smoothing", 0.0), seed=member.seed)
    train_loader, val_loader = prepared.loaders(batch_size, member.seed)
    history = T.fit(model, train_loader, val_loader, epochs, schedule=settings["schedule"], progress=False,
                    log=lambda s: None)
    return model, history


def max_weight_gap(a: MLP, b: MLP) -> float:
    return max((x - y).abs().max().item() for x, y in zip(a.state_dict().values(), b.state_dict().values()))


SETTINGS = [
    dict(hidden=[32, 16], dropout=[0.1, 0.2], momentum=0.9, weight_decay=1e-3, schedule="onecycle"),
    dict(hidden=[24], dropout=[0.3], momentum=0.8, weight_decay=0.0, schedule="constant", nesterov=True,
         label_smoothing=0.1),
]


@pytest.mark.parametrize("settings", SETTINGS)
def test_the_benchs_autograd_contender_trains_the_same_models(prepared, settings):
    # `make bench` times it against the hand-written backward: it must compute the same thing
    members = [S.Member(0.05, 0), S.Member(0.1, 1)]
    hand, _ = S.train_stack(prepared, members, batch_size=16, epochs=2, **settings)
    auto, _ = S.train_stack(prepared, members, batch_size=16, epochs=2, stack_class=bench.AutogradStack, **settings)
    assert isinstance(auto, bench.AutogradStack)
    for k in range(len(members)):
        assert max_weight_gap(auto.member(k), hand.member(k)) < 1e-4


@pytest.mark.parametrize("settings", SETTINGS)
@pytest.mark.parametrize("members", [
    [S.Member(0.05, 0), S.Member(0.1, 0), S.Member(0.02, 0)],      # one seed: shared batches
    [S.Member(0.05, 0), S.Member(0.05, 1), S.Member(0.1, 7)],      # several seeds: own batches
], ids=["one-seed", "several-seeds"])
def test_stacked_models_match_the_same_models_trained_alone(prepared, members, settings):
    stack, histories = S.train_stack(prepared, members, batch_size=16, epochs=2, **settings)
    for k, member in enumerate(members):
        model, history = alone(prepared, member, 2, 16, **settings)
        assert max_weight_gap(stack.member(k), model) < 1e-4
        for ours, theirs in zip(histories[k], history):
            assert ours["val_acc"] == pytest.approx(theirs["val_acc"], abs=1 / len(prepared.val_idx) + 1e-9)
            assert ours["train_loss"] == pytest.approx(theirs["train_loss"], rel=1e-4)
            assert ours["lr"] == pytest.approx(theirs["lr"], rel=1e-6)
            assert ours["models_in_stack"] == len(members)


def test_schedule_shape_is_torchs_one_cycle():
    total = 97
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.3, total_steps=total, pct_start=0.25,
                                                cycle_momentum=False)
    expected = []
    for _ in range(total):
        expected.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    shape = S.schedule_shape("onecycle", total)
    assert torch.allclose(0.3 * shape, torch.tensor(expected, dtype=torch.float64), rtol=1e-9, atol=1e-12)
    assert torch.equal(S.schedule_shape("constant", 5), torch.ones(5, dtype=torch.float64))


def test_a_diverging_member_stops_without_touching_the_others(prepared):
    settings = SETTINGS[0]
    good = [S.Member(0.05, 0), S.Member(0.1, 1)]
    together, hist = S.train_stack(prepared, [good[0], S.Member(1e6, 2), good[1]], batch_size=32, epochs=2,
                                   **settings)
    apart, _ = S.train_stack(prepared, good, batch_size=32, epochs=2, **settings)
    assert "non-finite loss at epoch 1" in hist[1][0]["diverged"]
    assert all("diverged" not in row for k in (0, 2) for row in hist[k])
    assert all(torch.isfinite(p).all() for p in together.member(1).parameters())
    # stacking is per model: the good members end exactly as they do without the bad one
    assert max_weight_gap(together.member(0), apart.member(0)) == 0
    assert max_weight_gap(together.member(2), apart.member(1)) == 0


def test_fraction_trains_on_a_fixed_stratified_share(prepared):
    settings = SETTINGS[0]
    _, a = S.train_stack(prepared, [S.Member(0.05, 0)], batch_size=16, epochs=1, fraction=0.5, **settings)
    _, b = S.train_stack(prepared, [S.Member(0.05, 0)], batch_size=16, epochs=1, fraction=0.5, **settings)
    _, whole = S.train_stack(prepared, [S.Member(0.05, 0)], batch_size=16, epochs=1, **settings)
    assert a[0][0]["val_acc"] == b[0][0]["val_acc"] and a[0][0]["train_loss"] == b[0][0]["train_loss"]
    assert a[0][0]["train_loss"] != whole[0][0]["train_loss"]


def test_tasks_stack_only_when_they_differ_in_lr_and_seed_alone(prepared):
    fixed = dict(SETTINGS[0], batch_size=16)
    tasks = [{"lr": 0.05, "seed": 0, "epochs": 1}, {"lr": 0.1, "seed": 1, "epochs": 1}]
    assert S.stack_key(tasks[0]) == S.stack_key(tasks[1])
    histories = S.train_tasks(prepared, fixed, tasks)
    assert len(histories) == 2 and all(len(h) == 1 for h in histories)
    with pytest.raises(ValueError, match="cannot share a stack"):
        S.train_tasks(prepared, fixed, [tasks[0], {"lr": 0.1, "seed": 1, "epochs": 2}])


def test_a_models_result_does_not_depend_on_its_stack_mates(prepared):
    """Bit-identical whatever trains beside it (shared or own batches, 1 to 6 models): a study's
    numbers do not depend on which worker happened to stack which trials."""
    settings = SETTINGS[0]
    a = S.Member(0.05, 0)
    stacks = [[a], [a, S.Member(0.1, 0)], [S.Member(0.1, 1), a],
              [S.Member(0.1, 1), S.Member(0.2, 2), a, S.Member(0.3, 3), S.Member(0.01, 4), S.Member(0.02, 5)]]
    weights = []
    for members in stacks:
        stack, _ = S.train_stack(prepared, members, batch_size=8, epochs=1, **settings)
        weights.append(torch.cat([v.flatten() for v in stack.member(members.index(a)).state_dict().values()]))
    assert all(torch.equal(weights[0], w) for w in weights[1:])
