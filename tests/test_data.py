"""The Dataset, the one normalization, the split and the batched loaders."""
from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from helpers import data

from conftest import synthetic_digits


def test_normalize_is_one_affine_map_of_raw_pixels():
    images, _ = synthetic_digits(20)
    x = data.normalize(images)
    expected = (images.reshape(20, -1).double() / 255 - data.MNIST_MEAN) / data.MNIST_STD
    assert x.dtype == torch.float32 and x.shape == (20, 784)
    assert torch.allclose(x.double(), expected, atol=1e-5)


def test_normalize_refuses_already_scaled_input():
    images, _ = synthetic_digits(4)
    with pytest.raises(TypeError, match="raw uint8"):
        data.normalize(images.float() / 255)
    with pytest.raises(ValueError, match=r"\[N, 28, 28\]"):
        data.normalize(torch.zeros(3, 27, 28, dtype=torch.uint8))


def test_every_split_gets_the_same_preprocessing():
    """The seed's 73.78%: train and test scaled differently. One image, every path, one answer."""
    images, labels = synthetic_digits(50)
    train_idx, val_idx = data.split_indices(labels, 0.2, 0)
    prepared = data.Prepared(images, labels, train_idx, val_idx, "synthetic")
    i = int(val_idx[0])
    via_val_batch = prepared.dataset("val").__getitems__([0])[0][0]
    via_item = data.DigitsDataset(images, labels)[i][0]
    via_test_set = data.DigitsDataset(images[i:i + 1])[0]       # unlabelled, as a test set
    via_loader = next(iter(data.make_loader(data.DigitsDataset(images[i:i + 1], labels[i:i + 1]), 1)))[0][0]
    direct = data.normalize(images[i:i + 1])[0]
    for other in (via_item, via_test_set, via_loader, direct):
        assert torch.equal(via_val_batch, other)


def test_getitems_matches_getitem():
    images, labels = synthetic_digits(30)
    ds = data.DigitsDataset(images, labels)
    xb, yb = ds.__getitems__([3, 7, 11])
    for row, i in enumerate([3, 7, 11]):
        x, y = ds[i]
        assert torch.equal(xb[row], x) and yb[row] == y


def test_loader_batches_by_tensor_indexing_not_per_item(monkeypatch):
    images, labels = synthetic_digits(100)
    ds = data.DigitsDataset(images, labels)
    calls = []
    monkeypatch.setattr(data.DigitsDataset, "__getitem__", lambda self, i: calls.append(i))
    batches = list(data.make_loader(ds, 32, shuffle=True, seed=1))
    assert calls == []  # never one item at a time
    assert [len(y) for _, y in batches] == [32, 32, 32, 4]
    assert sorted(torch.cat([y for _, y in batches]).tolist()) == sorted(labels.tolist())


def test_loader_shuffle_is_seeded():
    images, labels = synthetic_digits(100)
    order = lambda seed: torch.cat([y for _, y in data.make_loader(  # noqa: E731
        data.DigitsDataset(images, torch.arange(100)), 10, shuffle=True, seed=seed)])
    assert torch.equal(order(3), order(3))
    assert not torch.equal(order(3), order(4))


def test_split_is_stratified_seeded_and_disjoint():
    labels = torch.arange(1000) % 10
    tr, va = data.split_indices(labels, 0.1, 0)
    assert len(va) == 100 and len(tr) == 900
    assert set(tr.tolist()).isdisjoint(va.tolist())
    assert torch.bincount(labels[va], minlength=10).tolist() == [10] * 10
    assert torch.equal(data.split_indices(labels, 0.1, 0)[1], va)
    assert not torch.equal(data.split_indices(labels, 0.1, 1)[1], va)


def test_dataset_rejects_wrong_shapes():
    with pytest.raises(ValueError, match="uint8"):
        data.DigitsDataset(torch.zeros(3, 784, dtype=torch.uint8))
    with pytest.raises(ValueError, match="3 images but 2 labels"):
        data.DigitsDataset(torch.zeros(3, 28, 28, dtype=torch.uint8), torch.zeros(2, dtype=torch.long))


def test_prepare_mnist_and_round_trip(tmp_path, mnist_raw, monkeypatch):
    monkeypatch.setenv("MNIST_DATA_DIR", str(mnist_raw))
    prepared = data.prepare("mnist", 0.1, 0, max_samples=2000)
    assert len(prepared.labels) == 2000
    assert len(prepared.val_idx) == 200
    assert torch.bincount(prepared.labels).min() > 150  # stratified subset keeps every class
    path = data.save_prepared(prepared)
    again = data.load_prepared(path)
    assert torch.equal(again.images, prepared.images) and torch.equal(again.val_idx, prepared.val_idx)
    assert again.parameters == prepared.parameters and again.norm == prepared.norm


def test_prepare_from_csv_and_bad_sources(tmp_path):
    from helpers import kaggle

    images, labels = synthetic_digits(40)
    frame = kaggle.to_frame(images, labels)
    frame.to_csv(tmp_path / "train.csv", index=False)
    prepared = data.prepare(str(tmp_path / "train.csv"), 0.25, 0)
    assert torch.equal(prepared.images, images) and len(prepared.val_idx) == 10
    frame.drop(columns="label").to_csv(tmp_path / "test.csv", index=False)
    with pytest.raises(ValueError, match="no 'label' column"):
        data.prepare(str(tmp_path / "test.csv"), 0.25, 0)
    with pytest.raises(FileNotFoundError, match="no such CSV file"):
        data.check_source(str(tmp_path / "missing.csv"))
    with pytest.raises(ValueError, match="parameter 'source'"):
        data.check_source("fashion")


def test_load_prepared_missing_says_what_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="01_data"):
        data.load_prepared(tmp_path / "nope.pt")


def test_random_shift_moves_each_digit_within_bounds():
    images = torch.zeros(200, 28, 28, dtype=torch.uint8)
    images[:, 14, 14] = 255                              # one bright pixel in the middle
    x = data.normalize(images)
    torch.manual_seed(0)
    shifted = data.RandomShift(2)(x).view(200, 28, 28)
    bright = (shifted > 0).nonzero()
    assert len(bright) == 200                           # every image keeps its one pixel
    offsets = bright[:, 1:] - 14
    assert offsets.abs().max() == 2 and len({tuple(o) for o in offsets.tolist()}) > 15  # per digit
    background = data.normalize(torch.zeros(1, 28, 28, dtype=torch.uint8))[0, 0]
    assert torch.allclose(shifted[shifted <= 0], background)  # padding is the background value
    torch.manual_seed(0)
    assert torch.equal(data.RandomShift(2)(x).view(200, 28, 28), shifted)  # seeded
    assert torch.equal(data.RandomShift(0)(x), x)


def test_random_affine_warps_each_digit_on_its_own_and_keeps_the_background():
    images, _ = synthetic_digits(64)
    x = data.normalize(images)
    background = -data.MNIST_MEAN / data.MNIST_STD
    still = data.RandomAffine(rotate=0, scale=0, shift=0, elastic=0)
    assert torch.allclose(still(x), x, atol=1e-5), "no change asked, none made"
    blank = torch.full((4, 784), background)
    assert torch.allclose(data.RandomAffine(elastic=2.0)(blank), blank, atol=1e-5), "padding is background"
    torch.manual_seed(0)
    aug = data.RandomAffine(rotate=10, scale=0.1, shift=2, elastic=2.0)
    same = x[:1].repeat(32, 1)
    out = aug(same)
    assert out.shape == same.shape and torch.isfinite(out).all()
    assert len({tuple(row.round(decimals=3).tolist()) for row in out}) == 32, "drawn per digit, not per batch"
    torch.manual_seed(0)
    assert torch.equal(aug(same), out), "the global generator makes it reproducible"
    assert aug.spec == {"kind": "affine", "rotate": 10, "scale": 0.1, "shift": 2, "elastic": 2.0}
