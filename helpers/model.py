"""The seed's MLP, done right: logits out, softmax only for probabilities, He init, safe checkpoints."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from . import params as P
from . import store
from .data import Normalization

CHECKPOINT_FORMAT = "mnist-mlp-checkpoint/1"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt, truncated, or does not fit the model asked for."""


class MLP(nn.Module):
    """Linear -> LayerNorm -> ReLU -> Dropout per hidden layer, then a Linear to 10 logits.

    `forward` returns logits: CrossEntropyLoss applies log-softmax itself. The seed put a softmax
    in front of it, which squashes the gradients (softmax twice) and slows training.
    `fit(X, y)` takes one SGD step and returns the loss; `predict(X)` returns class indices.
    The optimizer is an attribute so a study can swap it (`configure_optimizer` or assignment).
    """

    def __init__(self, hidden: Sequence[int] = (128, 64), dropout: Sequence[float] = (0.15, 0.2),
                 in_features: int = 28 * 28, n_classes: int = 10, init: str = "he",
                 label_smoothing: float = 0.0,
                 lr: float = 0.01, momentum: float = 0.9, weight_decay: float = 1e-5):
        super().__init__()
        hidden = P.sizes("hidden", list(hidden))
        dropout = tuple(P.number(f"dropout[{i}]", d, low=0.0, high=1.0, high_open=True)
                        for i, d in enumerate(dropout))
        if len(dropout) != len(hidden):
            raise P.ParameterError(f"parameter 'dropout': one rate per hidden layer, got "
                                   f"{len(dropout)} rates for {len(hidden)} layers")
        P.choice("init", init, ("he", "default"))
        label_smoothing = P.number("label_smoothing", label_smoothing, low=0.0, high=1.0, high_open=True)
        self.config = {"hidden": list(hidden), "dropout": list(dropout), "in_features": in_features,
                       "n_classes": n_classes, "init": init, "label_smoothing": label_smoothing}
        layers: list[nn.Module] = []
        width = in_features
        for size, rate in zip(hidden, dropout):
            layers += [nn.Linear(width, size), nn.LayerNorm(size), nn.ReLU(), nn.Dropout(rate)]
            width = size
        layers.append(nn.Linear(width, n_classes))
        self.net = nn.Sequential(*layers)
        if init == "he":
            self._he_init()
        # Label smoothing (a share of the target spread over all classes) discourages
        # over-confident logits; 0 is the seed's plain cross-entropy.
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.configure_optimizer(lr, momentum, weight_decay)

    def _he_init(self) -> None:
        # Kaiming-normal (fan_in, gain sqrt(2)) keeps the activation variance through ReLU layers
        # at one; PyTorch's default (uniform, gain 1/sqrt(3)) shrinks it layer by layer.
        for m in self.net:
            if isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def configure_optimizer(self, lr: float = 0.01, momentum: float = 0.9,
                            weight_decay: float = 1e-5, nesterov: bool = False) -> torch.optim.SGD:
        """A fresh SGD over this model's parameters (checked, so a bad value stops here)."""
        lr = P.positive("lr", lr)
        momentum = P.number("momentum", momentum, low=0.0, high=1.0, high_open=True)
        weight_decay = P.number("weight_decay", weight_decay, low=0.0)
        nesterov = P.boolean("nesterov", nesterov) and momentum > 0
        # fused: one kernel for the whole update instead of a dozen small ops per step; at
        # this model size the step's fixed cost is what training time is made of.
        self.optimizer = torch.optim.SGD(self.parameters(), lr=lr, momentum=momentum,
                                         weight_decay=weight_decay, nesterov=nesterov, fused=True)
        self.optimizer_config = {"lr": lr, "momentum": momentum, "weight_decay": weight_decay,
                                 "nesterov": nesterov}
        return self.optimizer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # logits [N, n_classes]

    def fit_step(self, X: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimization step; returns (loss, logits), both detached."""
        if not self.training:
            self.train()
        self.optimizer.zero_grad(set_to_none=True)
        logits = self(X)
        loss = self.loss_fn(logits, y)
        loss.backward()
        self.optimizer.step()
        return loss.detach(), logits.detach()

    def fit(self, X: torch.Tensor, y: torch.Tensor) -> float:
        """One optimization step on the batch (X, y); returns its loss."""
        return self.fit_step(X, y)[0].item()

    @torch.no_grad()
    def predict_proba(self, X: torch.Tensor) -> torch.Tensor:
        """Class probabilities [N, n_classes], in eval mode (no dropout); the mode is restored."""
        was_training = self.training
        self.eval()
        try:
            return torch.softmax(self(X), dim=1)
        finally:
            self.train(was_training)

    def predict(self, X: torch.Tensor) -> torch.Tensor:
        """Class indices [N]."""
        return self.predict_proba(X).argmax(dim=1)


def parameter_table(model: MLP) -> list[dict]:
    """One row per layer with trainable parameters: name, type, shape, count."""
    rows = []
    for name, module in model.net.named_children():
        n = sum(p.numel() for p in module.parameters())
        if n:
            rows.append({"layer": f"net.{name}", "type": type(module).__name__,
                         "shape": " + ".join(str(tuple(p.shape)) for p in module.parameters()),
                         "parameters": n})
    return rows


def save_checkpoint(path: str | os.PathLike, model: MLP, norm: Normalization,
                    training: dict | None = None, **meta) -> Path:
    """Weights, model configuration and normalization (all inference needs), written atomically.

    `training` holds what resuming needs (optimizer, scheduler and RNG states, history); it is
    left out of final models. Everything is plain tensors and containers, so the file loads
    with `torch.load(weights_only=True)`.
    """
    blob = {"format": CHECKPOINT_FORMAT, "model_config": model.config,
            "state_dict": model.state_dict(), "normalization": norm.as_dict(),
            "optimizer_config": model.optimizer_config, "meta": meta}
    if training is not None:
        blob["training"] = training
    with store.atomic_path(path) as tmp:
        torch.save(blob, tmp)
    return Path(path)


def read_checkpoint(path: str | os.PathLike) -> dict:
    """The checkpoint's contents, checked for shape; clear errors for anything unreadable."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        blob = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as e:  # torch.load raises many kinds (OSError, RuntimeError, UnpicklingError...)
        raise CheckpointError(f"{path}: not a readable checkpoint (corrupt or truncated file): "
                              f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e
    if not isinstance(blob, dict) or blob.get("format") != CHECKPOINT_FORMAT:
        found = blob.get("format") if isinstance(blob, dict) else type(blob).__name__
        raise CheckpointError(f"{path}: not a {CHECKPOINT_FORMAT} checkpoint (found {found!r})")
    missing = {"model_config", "state_dict", "normalization"} - blob.keys()
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {sorted(missing)}")
    return blob


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[MLP, Normalization, dict]:
    """(model in eval mode, its normalization, the whole checkpoint dict)."""
    blob = read_checkpoint(path)
    model = MLP(**blob["model_config"])
    if blob.get("optimizer_config"):
        model.configure_optimizer(**blob["optimizer_config"])
    try:
        model.load_state_dict(blob["state_dict"])
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not match the model configuration "
                              f"{blob['model_config']}: {str(e).splitlines()[0]}") from e
    model.to(device).eval()
    return model, Normalization(**blob["normalization"]), blob


@torch.no_grad()
def activation_stats(model: MLP, x: torch.Tensor) -> list[dict]:
    """Mean and std of every Linear output (before LayerNorm) and ReLU output, in eval mode.

    Forward hooks read the activations as `x` flows through; nothing is kept afterwards.
    """
    rows: list[dict] = []
    hooks = []
    depth = {"Linear": 0, "ReLU": 0}
    for module in model.net:
        kind = type(module).__name__
        if kind in depth:
            depth[kind] += 1

            def hook(_m, _inp, out, kind=kind, layer=depth[kind]):
                rows.append({"layer": layer, "output": kind, "mean": out.mean().item(),
                             "std": out.std().item(), "zero_fraction": (out == 0).float().mean().item()})
            hooks.append(module.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        model(x)
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return rows
