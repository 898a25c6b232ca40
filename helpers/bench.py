"""`make bench`: how fast the data path and training are, against the seed's way and the floor.

Printed, not asserted: timings belong in a benchmark, not in tests. Four measurements:
1. MNIST: fetch (from MNIST_MIRROR or the public mirrors) + verify + parse, into an empty folder,
   then a second, offline load.
2. Loader: one pass over the training digits at batch 64, per-item `__getitem__` + default
   collation against our batched `__getitems__`.
3. One epoch at batch 64 plus its validation pass: (a) the seed's pipeline as it was written (a
   per-item Dataset with a per-sample transform, split by `train_test_split` into Subsets, softmax
   inside the model; each step `fit` then `predict` on the same batch, running accuracy read with
   `.item()`; validation the same way), (b) ours (`train.train_epoch` + `train.validate`), (c) the
   compute floor: the same number of steps on one pre-made batch, no validation.
4. Stacked training (`helpers.stacked`): seconds per model-epoch for six 128-64 models trained
   side by side, against one trained alone by our loop, at batch 8 and at batch 64; and the same
   stack with autograd's backward (`AutogradStack`) against the hand-written one.
The contenders of each measurement run interleaved, best of `--repeats`: this machine's speed
drifts from minute to minute, and a drift must not land on one contender only.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from . import data, mnist, paths, stacked, store
from .model import MLP, keep_mask
from .train import train_epoch, validate


class SeedStyleDataset(Dataset):
    """As the seed had it: one sample at a time, normalized by a per-sample transform."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images.reshape(len(images), -1).numpy(), labels.numpy()
        self.transform = lambda x: (torch.tensor(x, dtype=torch.float32) / 255 - data.MNIST_MEAN) / data.MNIST_STD

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        return self.transform(self.images[i]), int(self.labels[i])


class SeedStyleMLP(nn.Module):
    """The seed's model and methods: softmax in forward (then CrossEntropyLoss applies log-softmax
    again), `fit` one step returning `loss.item()`, `predict` a second forward and argmax."""

    def __init__(self):
        super().__init__()
        self.net = MLP().net  # the same layers and initialization as ours
        self.loss_fn = nn.CrossEntropyLoss()
        self.optimizer = torch.optim.SGD(self.parameters(), lr=0.01, weight_decay=1e-5)

    def forward(self, x):
        return torch.softmax(self.net(x), dim=1)

    def fit(self, x, y) -> float:
        self.optimizer.zero_grad()
        loss = self.loss_fn(self(x), y)
        loss.backward()
        self.optimizer.step()
        return loss.item()

    def predict(self, x):
        return self(x).argmax(dim=1)


def seed_style_epoch(dataset: SeedStyleDataset, seed: int = 0) -> None:
    """One epoch and a validation pass, written the way the seed's notebook wrote them."""
    from sklearn.model_selection import train_test_split
    from torch.utils.data import Subset

    train_i, val_i = train_test_split(range(len(dataset)), test_size=0.1, random_state=seed)
    train = DataLoader(Subset(dataset, train_i), batch_size=64, shuffle=True)
    val = DataLoader(Subset(dataset, val_i), batch_size=64)
    model = SeedStyleMLP()
    model.train()
    running_loss, correct = 0.0, 0
    for x, y in train:
        running_loss += model.fit(x, y)
        correct += (model.predict(x) == y).sum().item()
    model.eval()
    with torch.no_grad():
        val_loss, val_correct = 0.0, 0
        for x, y in val:
            out = model(x)
            val_loss += model.loss_fn(out, y).item()
            val_correct += (out.argmax(1) == y).sum().item()


def _time(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _interleaved(contenders: dict, repeats: int) -> dict[str, float]:
    best = {name: float("inf") for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            best[name] = min(best[name], _time(fn))
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
    t = _interleaved({"per_item": lambda: drain(per_item), "batched": lambda: drain(batched)}, repeats)
    print(f"loader epoch (batch 64, {len(labels)} digits): per-item {t['per_item']:.2f} s, batched "
          f"{t['batched']:.3f} s, {t['per_item'] / t['batched']:.0f}x faster", flush=True)


def bench_epoch(prepared: data.Prepared, repeats: int) -> None:
    train = prepared.dataset("train")
    everything = SeedStyleDataset(prepared.images, prepared.labels)
    n_steps = -(-len(train) // 64)

    def ours():
        model = MLP()
        train_loader, val_loader = prepared.loaders(64, 0)
        train_epoch(model, train_loader)
        validate(model, val_loader)

    def floor():
        model = MLP()
        model.train()
        x, y = data.normalize(train.images[:64]), train.labels[:64]
        for _ in range(n_steps):
            model.fit_step(x, y)

    t = _interleaved({"seed_style": lambda: seed_style_epoch(everything), "ours": ours, "floor": floor}, repeats)
    print(f"one epoch + validation, batch 64, {n_steps} steps, torch threads: {torch.get_num_threads()}")
    print(f"seed_style_s={t['seed_style']:.2f} ours_s={t['ours']:.2f} floor_s={t['floor']:.2f} "
          f"speedup={t['seed_style'] / t['ours']:.2f} floor_ratio={t['ours'] / t['floor']:.2f}", flush=True)


class AutogradStack(stacked.StackedMLP):
    """The contender to the hand-written backward: the same stacked forward (baddbmm over the
    model axis, the same dropout draws) on the same flat parameter tensor, autograd's backward,
    and the same flat update. tests/test_stacked.py checks it ends with the same weights."""

    def step(self, x: torch.Tensor, y: torch.Tensor, lr_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
        # one leaf per block, each a view of the flat `w`: slices of a single flat leaf would make
        # autograd build and sum a zero-filled gradient of the whole of `w` for every block
        p = {key: v.detach().requires_grad_() for key, v in self.p.items()}
        h = x
        n_hidden = len(self.dims) - 2
        for i in range(n_hidden):
            z = torch.baddbmm(p["b", i], h, p["W", i])
            xhat = F.layer_norm(z, z.shape[-1:], eps=stacked.LN_EPS)
            h = torch.relu(torch.addcmul(p["beta", i], xhat, p["gamma", i]))
            if self.dropout[i] > 0:
                keep = torch.stack([keep_mask(h.shape[1:], self.dropout[i], g) for g in self.generators])
                h = h * keep * (1.0 / (1.0 - self.dropout[i]))
        logits = torch.baddbmm(p["b", n_hidden], h, p["W", n_hidden])
        K, B, C = logits.shape
        loss = F.cross_entropy(logits.reshape(K * B, C), y.reshape(K * B), reduction="none",
                               label_smoothing=self.label_smoothing).view(K, B).mean(1)
        loss.sum().backward()  # model k's parameters get the gradient of its own mean loss
        for key, leaf in p.items():
            self.g[key].copy_(leaf.grad)
        self.grad.add_(self.w, alpha=self.weight_decay)
        self._update(lr_scale)
        return loss.detach(), (logits.argmax(2) == y).sum(1)


def bench_stacked(prepared: data.Prepared, repeats: int, k: int = 6) -> list[dict]:
    settings = dict(hidden=[128, 64], dropout=[0.15, 0.2], momentum=0.9, weight_decay=1e-5, schedule="onecycle")
    rows = []
    for batch in (8, 64):
        def alone():
            model = MLP(lr=0.05)
            train_epoch(model, prepared.loaders(batch, 0)[0])
            validate(model, prepared.loaders(batch, 0)[1])

        def together(stack=stacked.StackedMLP):
            members = [stacked.Member(lr, 0) for lr in (0.01, 0.02, 0.03, 0.05, 0.1, 0.2)[:k]]
            stacked.train_stack(prepared, members, batch_size=batch, epochs=1, stack_class=stack, **settings)

        contenders = {"alone": alone, "stacked": together, "autograd": lambda: together(AutogradStack)}
        # one round at a time: the ratio of two contenders timed side by side is what drifts least
        rounds = [_interleaved(contenders, 1) for _ in range(repeats)]
        t = {name: min(r[name] for r in rounds) for name in contenders}
        ratios = [r["autograd"] / r["stacked"] for r in rounds]
        per_model = t["stacked"] / k
        print(f"stacked batch={batch}: alone_s={t['alone']:.2f} stacked_{k}_s={t['stacked']:.2f} "
              f"autograd_{k}_s={t['autograd']:.2f} per_model_s={per_model:.2f} speedup={t['alone'] / per_model:.2f} "
              f"autograd_vs_hand_written={min(ratios):.2f}-{max(ratios):.2f}", flush=True)
        rows.append({"batch_size": batch, "models": k, "alone_s": t["alone"], "stacked_s": t["stacked"],
                     "autograd_s": t["autograd"], "autograd_ratio_by_round": ratios})
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs (default 3)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: the study workers' setting, and the fastest for "
                             "the seed-sized model, whose matrices are too small to split)")
    parser.add_argument("--only", choices=("mnist", "loader", "epoch", "stacked"), action="append",
                        help="run only these parts (repeatable; default: all)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    parts = args.only or ["mnist", "loader", "epoch", "stacked"]
    if "mnist" in parts:
        bench_mnist()
    prepared = data.prepare("mnist", 0.1, 0)
    train = prepared.dataset("train")
    if "loader" in parts:
        bench_loader(train.images, train.labels, args.repeats)
    if "epoch" in parts:
        bench_epoch(prepared, args.repeats)
    if "stacked" in parts:
        rows = bench_stacked(prepared, args.repeats)
        record = store.result_record({"repeats": args.repeats, "threads": args.threads, "digits": len(train)},
                                     None, rows=rows)
        print(f"saved {paths.show(store.save_json(stacked_path(), record))}")


def stacked_path() -> Path:
    """The stacked trainer's latest timings (the README's backward table)."""
    return paths.figures_dir() / "bench_stacked.json"


if __name__ == "__main__":
    main()
