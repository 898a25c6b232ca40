"""K small MLPs trained side by side as one stacked model: many study points for little more than one.

At the studies' sizes (the 128-64 MLP, batches of 8 to 128) a training step is mostly fixed cost:
dozens of small tensor operations, autograd's bookkeeping and the optimizer's Python code, each a
few microseconds, whatever the batch. Here K models that share a batch size take their steps
together: every operation works on all K at once (`torch.baddbmm` over a leading model axis), the
backward pass is written out by hand (no autograd graph: `make bench` times autograd's on the
same stack, README "Speed"), and all parameters, gradients and momentum buffers live in three
flat tensors, so the SGD update is two operations whatever K is.

Each model k is the MLP of `helpers.model` with its own peak learning rate and seed, and draws
exactly what it would draw trained alone by `train.fit`: its initial weights and then its dropout
masks from a generator seeded with its seed, its shuffle order from `TensorBatches(seed)`. Trained
alone or stacked, a model ends with the same weights up to float rounding (tests/test_stacked.py).

The update is torch's SGD (momentum, Nesterov, coupled weight decay) written over the flat
tensors: weight decay is folded into the matmul that makes each weight gradient, and model k's
rate is its peak rate lr_k times the schedule's shape s(t), applied through one per-element rate
tensor: two flat operations per step whatever K is.

Not here: augmentation and checkpoints (the final models train alone with `train.fit`).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from .data import Prepared, TensorBatches, normalize, split_indices
from .model import MLP, keep_mask

LN_EPS = 1e-5  # nn.LayerNorm's default


def schedule_shape(schedule: str, total_steps: int) -> torch.Tensor:
    """The learning rate at every step as a fraction of the peak: float64 [total_steps].

    "onecycle" is torch's OneCycleLR as `train.make_scheduler` configures it (pct_start 0.25,
    cosine, div_factor 25, final_div_factor 1e4), which is linear in its peak rate; "constant" is 1.
    """
    if schedule == "constant":
        return torch.ones(total_steps, dtype=torch.float64)
    start, peak = 1 / 25, 1.0
    end = start / 1e4
    warm = float(0.25 * total_steps) - 1
    t = torch.arange(total_steps, dtype=torch.float64)

    def cos_anneal(a, b, pct):
        return b + (a - b) / 2 * (torch.cos(math.pi * pct) + 1)

    return torch.where(t <= warm, cos_anneal(start, peak, t / warm),
                       cos_anneal(peak, end, (t - warm) / (total_steps - 1 - warm)))


@dataclass(frozen=True)
class Member:
    """One model of a stack: its peak learning rate and its seed."""

    lr: float
    seed: int


class StackedMLP:
    """K MLPs of one shape as stacked tensors; model k is `MLP(hidden, dropout, seed=seeds[k])`."""

    def __init__(self, members: Sequence[Member], hidden: Sequence[int], dropout: Sequence[float], *,
                 momentum: float = 0.9, weight_decay: float = 1e-5, nesterov: bool = False,
                 label_smoothing: float = 0.0, in_features: int = 28 * 28, n_classes: int = 10):
        self.members = list(members)
        K = self.K = len(self.members)
        self.dims = [in_features, *hidden, n_classes]
        self.dropout = list(dropout)
        self.momentum, self.weight_decay, self.nesterov = momentum, weight_decay, nesterov and momentum > 0
        self.label_smoothing = label_smoothing
        # Flat storage, one block per kind of parameter, each block [K, ...] and contiguous, so a
        # layer's weights are one batched-matmul operand and the update runs over one tensor.
        # Weight matrices come first: their decay is folded into the matmul that makes their
        # gradient; the small rest (biases, LayerNorm) is decayed in one operation at the end.
        weights, small = [], []
        for i, (a, b) in enumerate(zip(self.dims[:-1], self.dims[1:])):
            weights.append(("W", i, (a, b)))                     # stored [in, out]
            small.append(("b", i, (1, b)))
            if i < len(hidden):
                small += [("gamma", i, (1, b)), ("beta", i, (1, b))]
        total = sum(K * math.prod(shape) for _, _, shape in weights + small)
        self.w, self.grad, self.buf = (torch.zeros(total) for _ in range(3))
        self.p, self.g, self.m = {}, {}, {}
        offset = 0
        for kind, i, shape in weights + small:
            if kind == "b" and i == 0:
                self.small_from = offset
            n = K * math.prod(shape)
            for views, flat in ((self.p, self.w), (self.g, self.grad), (self.m, self.buf)):
                views[kind, i] = flat[offset:offset + n].view(K, *shape)
            offset += n
        # Each model's own generator: its initial weights now, its dropout masks later, in the
        # order MLP draws them.
        self.generators = []
        for k, m in enumerate(self.members):
            alone = MLP(hidden, dropout, in_features=in_features, n_classes=n_classes, seed=m.seed)
            self.load_member(k, alone)
            self.generators.append(alone.generator)
        self._set_rates(torch.tensor([m.lr for m in self.members], dtype=torch.float32))

    def _set_rates(self, lr: torch.Tensor) -> None:
        self.lr = lr                                            # [K] peak rates
        # each model's peak rate, laid out like `w` (block by block, model by model)
        self.lr_flat = torch.cat([lr.repeat_interleave(v[0].numel()) for v in self.p.values()])

    # ------------------------------------------------------------------ moving models in and out

    def _linears(self, mlp: MLP):
        return [m for m in mlp.net if isinstance(m, torch.nn.Linear)], \
               [m for m in mlp.net if isinstance(m, torch.nn.LayerNorm)]

    @torch.no_grad()
    def load_member(self, k: int, mlp: MLP) -> None:
        linears, norms = self._linears(mlp)
        for i, lin in enumerate(linears):
            self.p["W", i][k].copy_(lin.weight.t())
            self.p["b", i][k, 0].copy_(lin.bias)
        for i, ln in enumerate(norms):
            self.p["gamma", i][k, 0].copy_(ln.weight)
            self.p["beta", i][k, 0].copy_(ln.bias)

    @torch.no_grad()
    def member(self, k: int) -> MLP:
        """Model k as a plain `MLP` (eval mode), e.g. to save or to compare with one trained alone."""
        m = self.members[k]
        mlp = MLP(self.dims[1:-1], self.dropout, in_features=self.dims[0], n_classes=self.dims[-1],
                  label_smoothing=self.label_smoothing, lr=m.lr, momentum=self.momentum,
                  weight_decay=self.weight_decay, nesterov=self.nesterov, seed=m.seed)
        linears, norms = self._linears(mlp)
        for i, lin in enumerate(linears):
            lin.weight.copy_(self.p["W", i][k].t())
            lin.bias.copy_(self.p["b", i][k, 0])
        for i, ln in enumerate(norms):
            ln.weight.copy_(self.p["gamma", i][k, 0])
            ln.bias.copy_(self.p["beta", i][k, 0])
        return mlp.eval()

    @torch.no_grad()
    def stop(self, k: int) -> None:
        """Freeze model k (it diverged): zero its weights, momentum and rate; it stays finite."""
        for views in (self.p, self.m):
            for view in views.values():
                view[k].zero_()
        lr = self.lr.clone()
        lr[k] = 0.0
        self._set_rates(lr)

    # ------------------------------------------------------------------------- forward, backward

    def _layers(self, x: torch.Tensor, train: bool):
        """Forward pass; returns logits [K, B, C] and what the backward pass needs."""
        saved = []
        h = x
        n_hidden = len(self.dims) - 2
        for i in range(n_hidden):
            z = torch.baddbmm(self.p["b", i], h, self.p["W", i])
            # LayerNorm without its affine part; torch.var_mean is ~30x slower than this here
            d = z - z.mean(dim=-1, keepdim=True)
            norm = torch.linalg.vector_norm(d, dim=-1, keepdim=True)
            rstd = norm.square_().div_(z.shape[-1]).add_(LN_EPS).rsqrt_()
            xhat = d.mul_(rstd)
            y = torch.addcmul(self.p["beta", i], xhat, self.p["gamma", i])
            # ReLU then dropout is one multiplicative mask, which is also their backward pass:
            # sign(relu(y)) is 1 where y > 0, times keep / (1 - p). Floats, not bools: faster.
            mask = torch.relu(y).sign_()
            p = self.dropout[i]
            if train and p > 0:
                keep = torch.stack([keep_mask(y.shape[1:], p, g) for g in self.generators])
                mask.mul_(keep).mul_(1.0 / (1.0 - p))
            out = y * mask
            saved.append((h, xhat, rstd, mask))
            h = out
        logits = torch.baddbmm(self.p["b", n_hidden], h, self.p["W", n_hidden])
        return logits, saved, h

    def _backward(self, dlogits: torch.Tensor, saved, h_last: torch.Tensor) -> None:
        """Gradient plus weight decay (g + wd * w) of every parameter into `self.grad`."""
        n_hidden = len(self.dims) - 2
        wd = self.weight_decay
        torch.baddbmm(self.p["W", n_hidden], h_last.transpose(1, 2), dlogits, beta=wd,
                      out=self.g["W", n_hidden])
        torch.sum(dlogits, dim=1, keepdim=True, out=self.g["b", n_hidden])
        dh = torch.bmm(dlogits, self.p["W", n_hidden].transpose(1, 2))
        for i in reversed(range(n_hidden)):
            h_in, xhat, rstd, mask = saved[i]
            dy = dh.mul_(mask)
            torch.sum(dy * xhat, dim=1, keepdim=True, out=self.g["gamma", i])
            torch.sum(dy, dim=1, keepdim=True, out=self.g["beta", i])
            dxhat = dy.mul_(self.p["gamma", i])
            # LayerNorm backward: dz = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
            m1 = dxhat.mean(dim=-1, keepdim=True)
            m2 = (dxhat * xhat).mean(dim=-1, keepdim=True)
            dz = dxhat.sub_(m1).sub_(xhat * m2).mul_(rstd)
            torch.baddbmm(self.p["W", i], h_in.transpose(1, 2), dz, beta=wd, out=self.g["W", i])
            torch.sum(dz, dim=1, keepdim=True, out=self.g["b", i])
            if i > 0:
                dh = torch.bmm(dz, self.p["W", i].transpose(1, 2))
        self.grad[self.small_from:].add_(self.w[self.small_from:], alpha=wd)

    def step(self, x: torch.Tensor, y: torch.Tensor, lr_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
        """One SGD step for all K models. x: [K, B, in] (or an expanded view), y: [K, B].

        Returns each model's mean batch loss [K] and correct count [K] (tensors, not synced).
        """
        logits, saved, h_last = self._layers(x, train=True)
        K, B, C = logits.shape
        logp = torch.log_softmax(logits, dim=-1)
        eps = self.label_smoothing
        nll = -logp.gather(2, y.unsqueeze(2)).squeeze(2)                  # [K, B]
        loss = nll.mean(1) if eps == 0 else (1 - eps) * nll.mean(1) - eps * logp.mean(2).mean(1)
        correct = (logits.argmax(2) == y).sum(1)
        # d(mean loss)/d logits = (softmax - smoothed one-hot) / B
        dlogits = logp.exp_().sub_(eps / C)
        dlogits.scatter_add_(2, y.unsqueeze(2), torch.full((K, B, 1), eps - 1.0))
        self._backward(dlogits.mul_(1.0 / B), saved, h_last)
        self._update(lr_scale)
        return loss.detach(), correct

    def _update(self, lr_scale: float) -> None:
        # torch's SGD on the flat tensors: buf = mu * buf + (g + wd * w); w -= lr_k * s(t) * buf
        torch.add(self.grad, self.buf, alpha=self.momentum, out=self.buf)
        step = torch.add(self.grad, self.buf, alpha=self.momentum) if self.nesterov else self.buf
        self.w.addcmul_(step, self.lr_flat, value=-lr_scale)

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor, chunk: int = 2048) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean loss [K] and accuracy [K] over (x [N, in], y [N]), eval mode (no dropout)."""
        loss_sum = torch.zeros(self.K, dtype=torch.float64)
        correct = torch.zeros(self.K, dtype=torch.long)
        eps = self.label_smoothing
        for xs, ys in zip(x.split(chunk), y.split(chunk)):
            logits, _, _ = self._layers(xs.expand(self.K, *xs.shape), train=False)
            flat = logits.reshape(-1, logits.shape[-1])
            losses = F.cross_entropy(flat, ys.repeat(self.K), reduction="none", label_smoothing=eps)
            loss_sum += losses.view(self.K, -1).sum(1).double()
            correct += (logits.argmax(2) == ys).sum(1)
        return (loss_sum / len(y)).float(), correct.double() / len(y)


def train_stack(prepared: Prepared, members: Sequence[Member], *, hidden: Sequence[int],
                dropout: Sequence[float], batch_size: int, epochs: int, schedule: str = "onecycle",
                momentum: float = 0.9, weight_decay: float = 1e-5, nesterov: bool = False,
                label_smoothing: float = 0.0, fraction: float = 1.0,
                on_epoch: Callable[[int, list[dict]], None] | None = None,
                stack_class: type[StackedMLP] = StackedMLP) -> tuple[StackedMLP, list[list[dict]]]:
    """Train every member on `prepared`'s split, as `train.fit` would train each alone.

    Returns the stacked model and one history per member (rows as `train.fit` writes them, plus
    `models_in_stack`; `seconds` is the whole stack's epoch). `on_epoch(epoch, rows)` sees each
    epoch's rows, one per member, as they are made (a worker saves them to its trials there). A
    member whose loss turns non-finite is stopped there and its rows say `diverged`.
    `fraction` < 1 trains on that share of the training split (stratified, the same for every
    seed), a cheaper budget for studies; validation always uses the whole validation split.
    `stack_class` takes the steps (`make bench` passes autograd's contender, `bench.AutogradStack`).
    """
    stack = stack_class(members, hidden, dropout, momentum=momentum, weight_decay=weight_decay,
                        nesterov=nesterov, label_smoothing=label_smoothing)
    K = stack.K
    flat = prepared.images.reshape(len(prepared.images), -1)
    train_idx = prepared.train_idx
    if fraction < 1:
        keep, _ = split_indices(prepared.labels[train_idx], 1 - fraction, seed=0)
        train_idx = train_idx[keep]
    train_x, train_y = flat[train_idx], prepared.labels[train_idx]
    val_x = normalize(flat[prepared.val_idx], prepared.norm)
    val_y = prepared.labels[prepared.val_idx]
    n = len(train_y)
    # One shuffle stream per distinct seed, as `Prepared.loaders(batch_size, seed)` makes it.
    seeds = sorted({m.seed for m in members})
    samplers = {s: TensorBatches(n, batch_size, shuffle=True, seed=s) for s in seeds}
    which = torch.tensor([seeds.index(m.seed) for m in members])
    shared = len(seeds) == 1
    steps = len(samplers[seeds[0]])
    shape = schedule_shape(schedule, epochs * steps).tolist()
    histories: list[list[dict]] = [[] for _ in range(K)]
    diverged: dict[int, str] = {}
    step_no = 0
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        lr_at_start = shape[step_no]
        orders = torch.stack([torch.cat(list(samplers[s])) for s in seeds])  # [S, n]
        loss_sum = torch.zeros(K, dtype=torch.float64)
        correct = torch.zeros(K, dtype=torch.long)
        for b in range(steps):
            idx = orders[:, b * batch_size:(b + 1) * batch_size]
            if shared:
                xb = normalize(train_x[idx[0]], prepared.norm)
                x, y = xb.expand(K, *xb.shape), train_y[idx[0]].expand(K, -1)
            else:
                x = normalize(train_x[idx[which]], prepared.norm)          # [K, B, in]
                y = train_y[idx[which]]
            loss, right = stack.step(x, y, shape[step_no])
            step_no += 1
            bad = ~torch.isfinite(loss)
            if bad.any():
                for k in bad.nonzero().flatten().tolist():
                    if k not in diverged:
                        diverged[k] = (f"non-finite loss at epoch {epoch}, step {b + 1} "
                                       f"(learning rate {members[k].lr * shape[step_no - 1]:.4g})")
                        stack.stop(k)
                loss = torch.where(bad, torch.zeros_like(loss), loss)
            loss_sum += loss.double() * len(idx[0])
            correct += right
        val_loss, val_acc = stack.evaluate(val_x, val_y)
        seconds = time.perf_counter() - start
        rows = []
        for k in range(K):
            row = {"epoch": epoch, "train_loss": float(loss_sum[k] / n), "train_acc": float(correct[k] / n),
                   "val_loss": float(val_loss[k]), "val_acc": float(val_acc[k]),
                   "lr": members[k].lr * lr_at_start, "seconds": seconds, "models_in_stack": K}
            if k in diverged:
                row.update(diverged=diverged[k], train_loss=float("nan"), val_loss=float("nan"))
            histories[k].append(row)
            rows.append(row)
        if on_epoch is not None:
            on_epoch(epoch, rows)
    return stack, histories


# How many models one worker stacks. Measured on the 2-core machines (notes in the README's Speed
# section): per model-epoch cost falls steeply up to about 6 models at small batches and is flat
# beyond; a stack much larger than that also leaves the other worker idle at the queue's end.
MAX_STACK = 6


def stack_key(task: dict) -> tuple:
    """Tasks with equal keys train together: everything but the learning rate and the seed."""
    return tuple(sorted((k, v) for k, v in task.items() if k not in ("lr", "seed")))


def train_tasks(prepared: Prepared, fixed: dict, tasks: Sequence[dict],
                on_epoch: Callable[[int, list[dict]], None] | None = None) -> list[list[dict]]:
    """Train study tasks that share a `stack_key` as one stack; one history per task, in order.

    Each task's settings are `fixed` overridden by the task itself (e.g. {"lr", "batch_size",
    "seed", "epochs"}); the keys are those of `train.check_settings`.
    """
    if len({stack_key(t) for t in tasks}) != 1:
        raise ValueError(f"tasks that differ in more than lr and seed cannot share a stack: {tasks}")
    settings = [{**fixed, **t} for t in tasks]
    s = settings[0]
    _, histories = train_stack(
        prepared, [Member(float(c["lr"]), int(c["seed"])) for c in settings],
        hidden=s["hidden"], dropout=s["dropout"], batch_size=int(s["batch_size"]), epochs=int(s["epochs"]),
        schedule=s["schedule"], momentum=s["momentum"], weight_decay=s["weight_decay"],
        nesterov=s.get("nesterov", False), label_smoothing=s.get("label_smoothing", 0.0),
        fraction=float(s.get("fraction", 1.0)), on_epoch=on_epoch)
    return histories
