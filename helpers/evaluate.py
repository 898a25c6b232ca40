"""Test-set evaluation: metrics, per-class report, confusion, mistakes, rendered and photographed digits."""
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


def seeds_and_ensemble(models, norm: data.Normalization, images: torch.Tensor, labels: torch.Tensor) -> dict:
    """Each model (a seed of one recipe) evaluated once, their mean +- std, and their ensemble.

    The ensemble averages the seeds' probabilities. Returns {"per_seed": [metrics...],
    "accuracy_mean", "accuracy_std" (None for one model), "n_seeds", "ensemble": metrics,
    "probs": the ensemble's probabilities [N, 10]}.
    """
    probs = [predict_all(m, images, norm) for m in models]
    per_seed = [metrics(p, labels) for p in probs]
    acc = np.array([r["accuracy"] for r in per_seed])
    together = torch.stack(probs).mean(0)
    return {"per_seed": per_seed, "accuracy_mean": float(acc.mean()),
            "accuracy_std": float(acc.std(ddof=1)) if len(acc) > 1 else None, "n_seeds": len(acc),
            "ensemble": metrics(together, labels), "probs": together}


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


def photo_accuracy(model: MLP, norm: data.Normalization, images: torch.Tensor, labels: torch.Tensor,
                   seed: int = 0, bins=((0.3, 0.5), (0.5, 0.7), (0.7, 0.9))) -> dict:
    """Accuracy on digits drawn as phone photos, against clean renderings of the same digits.

    Each digit gets a random shot (`photos.shot_for(seed, i)`: frame, size, place, angle, paper,
    light, noise, blur, JPEG quality); the photo and the black-on-white rendering with the same
    geometry both go through `predict.preprocess`. A photo in which no digit is found counts as
    wrong. `by_paper` splits both accuracies by the paper's luminance, bins [low, high).
    """
    from . import photos
    from .predict import ImageError, preprocess

    shots = [photos.shot_for(seed, i) for i in range(len(images))]
    clean = torch.stack([preprocess(photos.clean(img, s)) for img, s in zip(images, shots)])
    photographed, found = [], []
    for img, s in zip(images, shots):
        try:
            photographed.append(preprocess(photos.photograph(img, s)))
            found.append(True)
        except ImageError:
            photographed.append(torch.zeros_like(clean[0]))
            found.append(False)
    right_clean = predict_all(model, clean, norm).argmax(1) == labels
    right_photo = (predict_all(model, torch.stack(photographed), norm).argmax(1) == labels) & torch.tensor(found)
    paper = torch.tensor([s.paper for s in shots])
    by_paper = []
    for low, high in bins:
        inside = (paper >= low) & (paper < high)
        n = int(inside.sum())
        by_paper.append({"paper": (low, high), "n": n,
                         "clean": right_clean[inside].float().mean().item() if n else float("nan"),
                         "photo": right_photo[inside].float().mean().item() if n else float("nan")})
    return {"n": len(labels), "clean": right_clean.float().mean().item(),
            "photo": right_photo.float().mean().item(), "no_digit_found": found.count(False),
            "by_paper": by_paper}
