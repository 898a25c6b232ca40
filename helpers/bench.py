"""`make bench`: how fast the data path and a training epoch are, against the seed's way and the floor.

Printed, not asserted: timings belong in a benchmark, not in tests. Three measurements:
1. MNIST: fetch (from MNIST_MIRROR or the public mirrors) + verify + parse, into an empty folder,
   then a second, offline load.
2. Loader: one pass over the training digits at batch 64, per-item `__getitem__` + default
   collation against our batched `__getitems__`.
3. One training epoch at batch 64: (a) seed-style pipeline (per-item Dataset with a per-sample
   normalize transform, default collation, softmax inside the model), (b) ours, (c) the compute
   floor: the same number of steps on one pre-made batch. The last line is the summary.
"""
from __future__ import annotations

import argparse
import tempfile
import time

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from . import data, mnist
from .model import MLP
from .train import seed_everything, train_epoch


class SeedStyleDataset(Dataset):
    """As the seed had it: one sample at a time, normalized by a per-sample transform."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images.reshape(len(images), -1).numpy(), labels.numpy()
        self.transform = lambda x: (torch.tensor(x, dtype=torch.float32) / 255 - data.MNIST_MEAN) / data.MNIST_STD

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        return self.transform(self.images[i]), int(self.labels[i])


class SeedStyleMLP(MLP):
    """The seed's mistake: softmax in forward, then CrossEntropyLoss applies log-softmax again."""

    def forward(self, x):
        return torch.softmax(self.net(x), dim=1)


def _time(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def bench_mnist() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        try:
            images, _ = mnist.load_mnist("train", data_dir=tmp, progress=False)
        except mnist.MnistDownloadError as e:
            print(f"mnist train: fetch not measured, no source reachable ({str(e).splitlines()[0]})")
            return
        first = time.perf_counter() - start
        start = time.perf_counter()
        mnist.load_mnist("train", data_dir=tmp, progress=False)
        again = time.perf_counter() - start
    print(f"mnist train: fetch+verify+parse {first:.2f} s, later offline load {again:.2f} s "
          f"({len(images)} images)", flush=True)


def bench_loader(images, labels, repeats: int) -> None:
    per_item = DataLoader(SeedStyleDataset(images, labels), batch_size=64, shuffle=True)
    batched = data.make_loader(data.DigitsDataset(images, labels), 64, shuffle=True)
    drain = lambda loader: sum(1 for _ in loader)  # noqa: E731
    a = _time(lambda: drain(per_item), 1)
    b = _time(lambda: drain(batched), repeats)
    print(f"loader epoch (batch 64, {len(labels)} digits): per-item {a:.2f} s, batched {b:.3f} s, "
          f"{a / b:.0f}x faster", flush=True)


def bench_epoch(images, labels, repeats: int) -> None:
    n_steps = -(-len(labels) // 64)

    def seed_style():
        seed_everything(0)
        model = SeedStyleMLP()
        # the seed's optimizer as it had it: plain SGD, lr 0.01, weight decay 1e-5
        model.optimizer = torch.optim.SGD(model.parameters(), lr=0.01, weight_decay=1e-5)
        train_epoch(model, DataLoader(SeedStyleDataset(images, labels), batch_size=64, shuffle=True))

    def ours():
        seed_everything(0)
        train_epoch(MLP(), data.make_loader(data.DigitsDataset(images, labels), 64, shuffle=True))

    def floor():
        seed_everything(0)
        model = MLP()
        model.train()
        x, y = data.normalize(images[:64]), labels[:64]
        for _ in range(n_steps):
            model.fit_step(x, y)

    # Interleaved, best of `repeats` each: this machine's speed drifts from minute to minute,
    # and a drift must not land on one contender only.
    best = {"a": float("inf"), "b": float("inf"), "c": float("inf")}
    for _ in range(repeats):
        for key, fn in (("a", seed_style), ("b", ours), ("c", floor)):
            best[key] = min(best[key], _time(fn, 1))
    a, b, c = best["a"], best["b"], best["c"]
    print(f"one epoch, batch 64, {n_steps} steps, torch threads: {torch.get_num_threads()}")
    print(f"seed_style_s={a:.2f} ours_s={b:.2f} floor_s={c:.2f} speedup={a / b:.2f} floor_ratio={b / c:.2f}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="best of this many runs (default 5)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: the sweeps' setting, and the fastest for "
                             "the seed-sized model, whose matrices are too small to split)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    bench_mnist()
    prepared = data.prepare("mnist", 0.1, 0)
    train = prepared.dataset("train")
    bench_loader(train.images, train.labels, args.repeats)
    bench_epoch(train.images, train.labels, args.repeats)


if __name__ == "__main__":
    main()
