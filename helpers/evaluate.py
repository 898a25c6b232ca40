"""Test-set evaluation: metrics, per-class report, confusion, mistakes, rendered-digit check."""
from __future__ import annotations

import numpy as np
import torch

from . import data
from .model import MLP


@torch.no_grad()
def predict_all(model: MLP, images: torch.Tensor, norm: data.Normalization,
                batch_size: int = 4096) -> torch.Tensor:
    """Class probabilities `[N, 10]` for uint8 images `[N, 28, 28]`, through the one normalization."""
    device = next(model.parameters()).device
    loader = data.make_loader(data.DigitsDataset(images, None, norm), batch_size)
    return torch.cat([model.predict_proba(x.to(device)).cpu() for x in loader])


def metrics(probs: torch.Tensor, labels: torch.Tensor) -> dict:
    """Cross-entropy loss and accuracy from probabilities (the model's own loss, unsmoothed)."""
    nll = -torch.log(probs.clamp_min(1e-12))[torch.arange(len(labels)), labels]
    return {"loss": nll.mean().item(), "accuracy": (probs.argmax(1) == labels).float().mean().item(),
            "n": len(labels)}


def per_class(labels: torch.Tensor, preds: torch.Tensor):
    """Precision, recall, F1 and support per digit (scikit-learn), as a DataFrame."""
    import pandas as pd
    from sklearn.metrics import precision_recall_fscore_support

    p, r, f, s = precision_recall_fscore_support(labels.numpy(), preds.numpy(), labels=list(range(10)),
                                                 zero_division=0)
    return pd.DataFrame({"precision": p, "recall": r, "f1": f, "support": s}).rename_axis("digit")


def confusion(labels: torch.Tensor, preds: torch.Tensor):
    """Counts of (true digit, predicted digit), as a labelled DataFrame."""
    import pandas as pd
    from sklearn.metrics import confusion_matrix

    cm = confusion_matrix(labels.numpy(), preds.numpy(), labels=list(range(10)))
    return pd.DataFrame(cm, index=pd.Index(range(10), name="true"),
                        columns=pd.Index(range(10), name="predicted"))


def confident_mistakes(probs: torch.Tensor, labels: torch.Tensor, k: int = 20) -> torch.Tensor:
    """Indices of the `k` wrong predictions the model was most sure of, most confident first."""
    confidence, preds = probs.max(1)
    wrong = torch.nonzero(preds != labels).flatten()
    return wrong[confidence[wrong].argsort(descending=True)[:k]]


def rendered_accuracy(model: MLP, norm: data.Normalization, images: torch.Tensor,
                      labels: torch.Tensor, sizes=(28, 56, 112, 300), seed: int = 0) -> dict:
    """Accuracy on digits re-drawn as a user's image would be, against the originals.

    Each digit is drawn black on white at `size` px, at a random offset in a canvas 1.5x
    larger, then goes through `predict.preprocess` (grayscale, invert, crop, 20x20, centre of
    mass) and the same normalization as training.
    """
    from .predict import preprocess, render_digit

    rng = np.random.default_rng(seed)
    result = {"original": (predict_all(model, images, norm).argmax(1) == labels).float().mean().item()}
    for size in sizes:
        canvas = int(size * 1.5)
        drawn = [preprocess(render_digit(img, size, tuple(int(v) for v in rng.integers(0, canvas - size + 1, 2)),
                                         canvas)) for img in images]
        preds = predict_all(model, torch.stack(drawn), norm).argmax(1)
        result[f"{size}px"] = (preds == labels).float().mean().item()
    return result
