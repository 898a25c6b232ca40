"""Training: one epoch, validation, and the loop with schedule, checkpoints and resume."""
from __future__ import annotations

import math
import os
import random
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader

from . import params as P
from .params import SCHEDULES, check_settings  # noqa: F401  (re-exported: train.check_settings)
from .data import Normalization, batch_size_of
from .model import MLP, CheckpointError, read_checkpoint, save_checkpoint



class TrainingDiverged(FloatingPointError):
    """The loss became NaN or infinite; carries where."""

    def __init__(self, epoch: int, step: int, loss: float, lr: float):
        super().__init__(f"non-finite loss ({loss}) at epoch {epoch}, step {step} "
                         f"(learning rate {lr:.4g}); try a smaller learning rate")
        self.epoch, self.step, self.loss, self.lr = epoch, step, loss, lr


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int) -> None:
    """Seed every generator a run draws from (init, dropout, any numpy/random use)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def headless() -> bool:
    """True outside a live notebook: papermill/nbval runs (DIGITS_HEADLESS) and plain scripts."""
    if os.environ.get("DIGITS_HEADLESS"):
        return True
    return "ipykernel" not in sys.modules


def train_epoch(model: MLP, loader: DataLoader, scheduler=None, *, epoch: int = 1,
                device: torch.device | None = None, bar=None, augment=None) -> tuple[float, float]:
    """One pass over `loader` with `model.fit_step`; returns (mean loss, accuracy) of the pass.

    The correct-count stays a tensor, read once at the end; the loss is read every step, to
    stop on the first non-finite value rather than train on garbage.
    """
    device = device or next(model.parameters()).device
    model.train()
    loss_sum = 0.0
    correct = torch.zeros((), dtype=torch.long, device=device)
    seen = 0
    for step, (x, y) in enumerate(loader, start=1):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if augment is not None:
            x = augment(x)
        loss, logits = model.fit_step(x, y)
        value = loss.item()
        if not math.isfinite(value):
            raise TrainingDiverged(epoch, step, value, model.optimizer.param_groups[0]["lr"])
        if scheduler is not None:
            scheduler.step()
        loss_sum += value * len(y)
        correct += (logits.argmax(1) == y).sum()
        seen += len(y)
        if bar is not None:
            bar.update(1)
    return loss_sum / seen, correct.item() / seen


@torch.no_grad()
def validate(model: MLP, loader: DataLoader, device: torch.device | None = None) -> tuple[float, float]:
    """(mean loss, accuracy) over `loader` in eval mode (no dropout)."""
    device = device or next(model.parameters()).device
    model.eval()
    loss_sum, correct, seen = 0.0, 0, 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        logits = model(x)
        loss_sum += model.loss_fn(logits, y).item() * len(y)
        correct += (logits.argmax(1) == y).sum().item()
        seen += len(y)
    return loss_sum / seen, correct / seen


def make_scheduler(optimizer: torch.optim.Optimizer, schedule: str, epochs: int, steps_per_epoch: int):
    """A per-step schedule for `optimizer` (a model's `.optimizer`): one-cycle peaks at its lr."""
    if P.choice("schedule", schedule, SCHEDULES) == "constant":  # a scheduler all the same: one loop for both
        return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    # cycle_momentum off: keep the momentum the caller chose; the cycle is in the learning rate.
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=optimizer.param_groups[0]["lr"], epochs=epochs,
        steps_per_epoch=steps_per_epoch, pct_start=0.25, cycle_momentum=False)


def schedule_rates(lr: float, schedule: str, epochs: int, steps_per_epoch: int) -> list[float]:
    """The learning rate of every step of a run, as `make_scheduler` sets it (on a throwaway optimizer)."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    scheduler = make_scheduler(optimizer, schedule, epochs, steps_per_epoch)
    rates = []
    for _ in range(epochs * steps_per_epoch):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()  # no gradients: nothing moves, but the scheduler sees a step was taken
        scheduler.step()
    return rates


def fit(model: MLP, train_loader: DataLoader, val_loader: DataLoader, epochs: int, *,
        schedule: str = "onecycle", norm: Normalization | None = None,
        checkpoint: str | os.PathLike | None = None, resume: bool = False,
        on_epoch: Callable[[dict], None] | None = None, progress: bool | None = None,
        augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
        log: Callable[[str], None] = print) -> list[dict]:
    """Train for `epochs`; return the history, one dict per epoch.

    With `checkpoint`, the full training state is saved atomically after every epoch; with
    `resume` too, a run continues from that file and ends with the same weights as one that was
    never interrupted (same optimizer, schedule, shuffle-order and dropout RNG states).
    `on_epoch(row)` sees each epoch's row (raising there stops the run).
    `progress`: a live bar (notebook) or one log line per epoch; default: bar unless headless.
    `augment`: applied to each training batch after normalization (`data.RandomShift`,
    `data.RandomAffine`); its `spec` is recorded with the run.
    """
    check_settings(len(train_loader.dataset), epochs=epochs, batch_size=batch_size_of(train_loader))
    resume = P.boolean("resume", resume)
    device = next(model.parameters()).device
    norm = norm or getattr(train_loader.dataset, "norm", Normalization())
    scheduler = make_scheduler(model.optimizer, schedule, epochs, len(train_loader))
    run = {"epochs": epochs, "schedule": schedule, "batch_size": batch_size_of(train_loader),
           "augment": getattr(augment, "spec", None),
           "optimizer": model.optimizer_config, "model": model.config}
    history: list[dict] = []
    if resume and checkpoint is not None and Path(checkpoint).exists():
        history = _restore(checkpoint, model, scheduler, train_loader, run)
        log(f"resumed from {checkpoint} after epoch {len(history)} of {epochs}")
    bar = None
    if progress is None:
        progress = not headless()
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=epochs * len(train_loader), initial=len(history) * len(train_loader),
                   unit="step", desc="training")
    try:
        for epoch in range(len(history) + 1, epochs + 1):
            start = time.perf_counter()
            lr = model.optimizer.param_groups[0]["lr"]
            train_loss, train_acc = train_epoch(model, train_loader, scheduler, epoch=epoch,
                                                device=device, bar=bar, augment=augment)
            val_loss, val_acc = validate(model, val_loader, device)
            row = {"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc,
                   "val_loss": val_loss, "val_acc": val_acc, "lr": lr,
                   "seconds": time.perf_counter() - start}
            history.append(row)
            if checkpoint is not None:
                save_checkpoint(checkpoint, model, norm,
                                training=_training_state(model, scheduler, train_loader, run, history))
            if bar is not None:
                bar.set_postfix(val_acc=f"{val_acc:.4f}", val_loss=f"{val_loss:.4f}")
            else:
                log(f"epoch {epoch:>3}/{epochs}  train loss {train_loss:.4f} acc {train_acc:.4f}  "
                    f"val loss {val_loss:.4f} acc {val_acc:.4f}  {row['seconds']:.1f}s")
            if on_epoch is not None:
                on_epoch(row)
    finally:
        if bar is not None:
            bar.close()
    return history


def _training_state(model, scheduler, loader, run, history) -> dict:
    shuffle = _shuffle_rng(loader)
    return {"run": run, "history": history, "optimizer": model.optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(), "model_rng": model.generator.get_state(),
            "loader_rng": shuffle.get_state() if shuffle is not None else None}


def _shuffle_rng(loader: DataLoader) -> torch.Generator | None:
    """The generator that decides the loader's shuffle order (ours keeps it in its batch sampler)."""
    return getattr(loader.batch_sampler, "generator", None) or loader.generator


def _restore(path, model, scheduler, loader, run) -> list[dict]:
    """Load a training state saved by `fit` into live objects; refuse a different run."""
    blob = read_checkpoint(path)
    state = blob.get("training")
    if state is None:
        raise CheckpointError(f"{path}: holds final weights only, no training state to resume from")
    if state["run"] != run:
        diff = {k: (state["run"].get(k), v) for k, v in run.items() if state["run"].get(k) != v}
        raise CheckpointError(f"{path}: made by a different run, cannot resume; "
                              f"(checkpoint, now) differ in {diff}")
    try:
        model.load_state_dict(blob["state_dict"])
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not match the model: {str(e).splitlines()[0]}") from e
    model.optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])  # augmentation draws
    model.generator.set_state(state["model_rng"])  # dropout masks
    if state["loader_rng"] is not None:
        _shuffle_rng(loader).set_state(state["loader_rng"])
    return list(state["history"])


def conclusion(history: list[dict], seconds: float, hidden: list, lr: float, batch_size: int) -> str:
    """03's closing paragraph, as Markdown: this run, beside the seed's model at the full budget.

    The committed full-budget grid (figures/full/06_grid_search.json) trained the seed's model at
    many (peak lr, batch) pairs with several seeds; its row at this run's pair says what this
    run's settings bought. One run here against a mean of n seeds there: their difference has a
    standard deviation of s * sqrt(1 + 1/n), s that row's seed spread, the only noise estimate at hand.
    """
    import json

    from . import paths

    last, best = history[-1], max(history, key=lambda r: r["val_acc"])
    text = [f"This run ({'–'.join(map(str, hidden))}, {len(history)} epoch{'s' if len(history) != 1 else ''}, "
            f"peak lr {lr:g}, batch {batch_size}) ends at {100 * last['val_acc']:.2f}% validation accuracy in "
            f"{seconds:.0f} s; its best epoch, {best['epoch']}, reached {100 * best['val_acc']:.2f}%."]
    path = paths.figures_dir() / "full" / "06_grid_search.json"
    grid = json.loads(path.read_text()) if path.exists() else {"rows": [], "parameters": {"fixed": {}}}
    row = next((r for r in grid["rows"] if math.isclose(r["lr"], lr) and r["batch_size"] == batch_size
                and r.get("val_acc_mean") is not None), None)
    if row is None:
        text.append(f"No committed full-budget result at this peak rate and batch size ({paths.show(path)}) "
                    "to compare with.")
        return " ".join(text)
    fixed = grid["parameters"]["fixed"]
    gap = 100 * (last["val_acc"] - row["val_acc_mean"])
    noise = 100 * (row["val_acc_std"] or 0) * math.sqrt(1 + 1 / row["n_seeds"])
    if noise and abs(gap) <= 2 * noise:
        verdict = "within two standard deviations of such a difference: one run cannot tell the two apart"
    else:
        verdict = ("by more than two standard deviations of such a difference" if noise
                   else "(that row has no seed spread to judge the difference by)")
    text.append(f"The committed full-budget grid trained {'–'.join(map(str, fixed['hidden']))} with dropout "
                f"{fixed['dropout']}, at the same peak rate and batch, for {grid['rows'][0]['epochs']} epochs on all "
                f"digits: {100 * row['val_acc_mean']:.2f}% ± {100 * (row['val_acc_std'] or 0):.2f} over "
                f"{row['n_seeds']} seeds. This run is {abs(gap):.2f} points {'higher' if gap > 0 else 'lower'}, {verdict}.")
    return " ".join(text)
