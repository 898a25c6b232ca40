"""The seed's MLP, done right: logits out, softmax only for probabilities, He init, safe checkpoints."""
from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Mapping, Sequence

import torch
from torch import nn

from . import params as P
from . import store
from .data import Normalization

CHECKPOINT_FORMAT = "mnist-mlp-checkpoint/1"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt, truncated, or does not fit the model asked for."""


def keep_mask(shape, p: float, generator: torch.Generator, device=None) -> torch.Tensor:
    """Dropout's mask: 1.0 with probability 1 - p, else 0.0, as float32 (a uniform draw u >= p).

    floor(u + 1 - p) is that test in float arithmetic: bool tensors cost several times more per
    element on these CPUs. One function, so a model draws the same masks alone and stacked.
    """
    return torch.rand(shape, generator=generator, device=device).add_(1.0 - p).floor_()


class Dropout(nn.Dropout):
    """nn.Dropout whose masks come from the model's own generator, not torch's global one.

    A model's randomness (initial weights, then every dropout mask, in order) is then a function
    of its `seed` alone, so `helpers.stacked` can train K models side by side and draw, for each,
    exactly the masks it would have drawn alone. Keeps a unit with probability 1 - p, as
    nn.Dropout does, and scales the kept ones by 1 / (1 - p).
    """

    def __init__(self, p: float, generator: torch.Generator):
        super().__init__(p)
        self.generator = generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        # the scale goes into the mask (0 or 1, so m * s is exact): one activation-sized product, not two
        return x * keep_mask(x.shape, self.p, self.generator, x.device).mul_(1.0 / (1.0 - self.p))


class MLP(nn.Module):
    """Linear -> LayerNorm -> ReLU -> Dropout per hidden layer, then a Linear to 10 logits.

    `conv` (channels per layer, default none) puts convolutional layers in front, each a 5x5
    Conv2d -> ReLU -> 2x2 max-pool over the 28x28 image: the small convnet that 07 sets beside
    the MLPs, trained by the same loop; with `conv`, `hidden` may be empty (a linear head).

    `forward` returns logits: CrossEntropyLoss applies log-softmax itself. The seed put a softmax
    in front of it, which squashes the gradients (softmax twice) and slows training.
    `fit(X, y)` takes one SGD step and returns the loss; `predict(X)` returns class indices.
    The optimizer is an attribute so a study can swap it (`configure_optimizer` or assignment).
    `seed` fixes the initial weights and the dropout masks (`self.generator` draws both, in
    that order); shuffling and augmentation have generators of their own.
    """

    def __init__(self, hidden: Sequence[int] = (128, 64), dropout: Sequence[float] = (0.15, 0.2),
                 in_features: int = 28 * 28, n_classes: int = 10, init: str = "he",
                 label_smoothing: float = 0.0,
                 lr: float = 0.01, momentum: float = 0.9, weight_decay: float = 1e-5,
                 nesterov: bool = False, seed: int = 0, conv: Sequence[int] = ()):
        super().__init__()
        conv = P.sizes("conv", list(conv)) if len(conv) else ()
        hidden = P.sizes("hidden", list(hidden)) if len(hidden) or not conv else ()
        if 28 >> len(conv) == 0:
            raise P.ParameterError(f"parameter 'conv': at most 4 layers (each halves the 28x28 image), got {len(conv)}")
        dropout = tuple(P.number(f"dropout[{i}]", d, low=0.0, high=1.0, high_open=True)
                        for i, d in enumerate(dropout))
        if len(dropout) != len(hidden):
            raise P.ParameterError(f"parameter 'dropout': one rate per hidden layer, got "
                                   f"{len(dropout)} rates for {len(hidden)} layers")
        P.choice("init", init, ("he", "default"))
        label_smoothing = P.number("label_smoothing", label_smoothing, low=0.0, high=1.0, high_open=True)
        seed = P.integer("seed", seed, minimum=0)
        self.config = {"hidden": list(hidden), "dropout": list(dropout), "in_features": in_features,
                       "n_classes": n_classes, "init": init, "label_smoothing": label_smoothing,
                       "seed": seed, **({"conv": list(conv)} if conv else {})}
        self.generator = torch.Generator().manual_seed(seed)
        layers: list[nn.Module] = [nn.Unflatten(1, (1, 28, 28))] if conv else []
        channels = 1
        for c in conv:
            layers += [nn.Conv2d(channels, c, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2)]
            channels = c
        layers += [nn.Flatten()] if conv else []
        width = channels * (28 >> len(conv)) ** 2 if conv else in_features
        for size, rate in zip(hidden, dropout):
            layers += [nn.Linear(width, size), nn.LayerNorm(size), nn.ReLU(), Dropout(rate, self.generator)]
            width = size
        layers.append(nn.Linear(width, n_classes))
        self.net = nn.Sequential(*layers)
        self._init_weights(init)
        # Label smoothing (a share of the target spread over all classes) discourages
        # over-confident logits; 0 is the seed's plain cross-entropy.
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self._optimizer_settings(lr, momentum, weight_decay, nesterov)

    @classmethod
    def from_settings(cls, settings: Mapping, **overrides) -> "MLP":
        """The model that checked settings describe (`params.check_settings`, a recipe); the
        keys that are training's (epochs, batch_size, schedule, augment) are left to it."""
        taken = inspect.signature(cls).parameters
        return cls(**{k: v for k, v in {**settings, **overrides}.items() if k in taken})

    def _init_weights(self, init: str) -> None:
        # Kaiming-normal (fan_in, gain sqrt(2)) keeps the activation variance through ReLU layers
        # at one; PyTorch's default (uniform, gain 1/sqrt(3)) shrinks it layer by layer. Either
        # is drawn here from the model's generator, layer by layer, weights before biases.
        for m in self.net:
            if not isinstance(m, (nn.Linear, nn.Conv2d)):
                continue
            if init == "he":
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu", generator=self.generator)
                nn.init.zeros_(m.bias)
            else:  # what nn.Linear.reset_parameters does, from our generator
                nn.init.kaiming_uniform_(m.weight, a=5 ** 0.5, generator=self.generator)
                bound = 1 / m.weight[0].numel() ** 0.5
                nn.init.uniform_(m.bias, -bound, bound, generator=self.generator)

    def configure_optimizer(self, lr: float = 0.01, momentum: float = 0.9,
                            weight_decay: float = 1e-5, nesterov: bool = False) -> torch.optim.SGD:
        """A fresh SGD over this model's parameters (checked, so a bad value stops here)."""
        self._optimizer_settings(lr, momentum, weight_decay, nesterov)
        return self.optimizer

    def _optimizer_settings(self, lr, momentum, weight_decay, nesterov) -> None:
        # The optimizer itself is built on first use of `self.optimizer`: building torch's SGD
        # imports much of torch (seconds), which a model that is only evaluated, or only lends
        # its initial weights to `helpers.stacked`, never needs.
        checked = P.check_settings(0, lr=lr, momentum=momentum, weight_decay=weight_decay)
        self.optimizer_config = {**checked, "nesterov": P.boolean("nesterov", nesterov) and checked["momentum"] > 0}
        self._optimizer = None

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        if self._optimizer is None:
            # fused: one kernel for the whole update instead of a dozen small ops per step; at
            # this model size the step's fixed cost is what training time is made of.
            self._optimizer = torch.optim.SGD(self.parameters(), **self.optimizer_config, fused=True)
        return self._optimizer

    @optimizer.setter
    def optimizer(self, optimizer: torch.optim.Optimizer) -> None:  # a study or the bench swaps it
        self._optimizer = optimizer

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


class Ensemble(nn.Module):
    """Several trained MLPs (seeds of one recipe) that answer together: their probabilities averaged.

    Has the inference side of MLP's interface (`predict_proba`, `predict`, `config`), so the
    evaluation, `helpers.predict` and the drawing widget take either.
    """

    def __init__(self, members: Sequence[MLP]):
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one model")
        self.members = nn.ModuleList(members)
        self.config = {"ensemble_of": len(members), **{k: v for k, v in members[0].config.items() if k != "seed"},
                       "seeds": [m.config["seed"] for m in members]}

    @torch.no_grad()
    def predict_proba(self, X: torch.Tensor) -> torch.Tensor:
        return torch.stack([m.predict_proba(X) for m in self.members]).mean(0)

    def predict(self, X: torch.Tensor) -> torch.Tensor:
        return self.predict_proba(X).argmax(dim=1)


def _model_blob(model: MLP) -> dict:
    return {"model_config": model.config, "state_dict": model.state_dict(),
            "optimizer_config": model.optimizer_config}


def save_checkpoint(path: str | os.PathLike, model: MLP | Ensemble, norm: Normalization,
                    training: dict | None = None, **meta) -> Path:
    """Weights, model configuration and normalization (all inference needs), written atomically.

    `training` holds what resuming needs (optimizer, scheduler and RNG states, history); it is
    left out of final models. An Ensemble is saved as its members. Everything is plain tensors
    and containers, so the file loads with `torch.load(weights_only=True)`.
    """
    blob = {"format": CHECKPOINT_FORMAT, "normalization": norm.as_dict(), "meta": meta}
    if isinstance(model, Ensemble):
        blob["members"] = [_model_blob(m) for m in model.members]
    else:
        blob.update(_model_blob(model))
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
    need = {"normalization"} | ({"members"} if "members" in blob else {"model_config", "state_dict"})
    missing = need - blob.keys()
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {sorted(missing)}")
    return blob


def _build(path, part: dict) -> MLP:
    model = MLP(**part["model_config"])
    if part.get("optimizer_config"):
        model._optimizer_settings(**part["optimizer_config"])
    try:
        model.load_state_dict(part["state_dict"])
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not match the model configuration "
                              f"{part['model_config']}: {str(e).splitlines()[0]}") from e
    return model


def load_checkpoint(path: str | os.PathLike,
                    device: str | torch.device = "cpu") -> tuple[MLP | Ensemble, Normalization, dict]:
    """(model or ensemble in eval mode, its normalization, the whole checkpoint dict)."""
    blob = read_checkpoint(path)
    if "members" in blob:
        model = Ensemble([_build(path, part) for part in blob["members"]])
    else:
        model = _build(path, blob)
    model.to(device).eval()
    return model, Normalization(**blob["normalization"]), blob


@torch.no_grad()
def activation_stats(model: MLP, x: torch.Tensor, outputs: Sequence[str] = ("Linear", "ReLU")) -> list[dict]:
    """Mean and std of the output of every module of the kinds in `outputs`, in eval mode.

    The kinds: "Linear" (before LayerNorm), "LayerNorm", "ReLU"; `layer` counts each from 1.
    Forward hooks read the activations as `x` flows through; nothing is kept afterwards.
    """
    rows: list[dict] = []
    hooks = []
    depth = {kind: 0 for kind in outputs}
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
