"""The data layer: sources, the one normalization, the Dataset, the split and the loaders.

Every split (train, validation, test) and every user image reaches the model through
`normalize`; nothing else turns pixels into model input. The seed project scaled its training
and test data differently and lost 25 points of test accuracy; here that cannot happen, because
`normalize` only accepts raw uint8 pixels and there is no second path.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from . import paths, store
from .kaggle import CsvFormatError, label_last, read_digits_csv  # noqa: F401  (re-exported)
from .mnist import load_mnist  # noqa: F401  (re-exported: helpers.data.load_mnist)

# Mean and standard deviation of the MNIST training pixels scaled to [0, 1]. Fixed constants,
# not per-split statistics, so that train, validation, test and a user's photo agree exactly.
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
IMAGE_SHAPE = (28, 28)


@dataclass(frozen=True)
class Normalization:
    """How uint8 pixels become model input; saved in every checkpoint."""

    mean: float = MNIST_MEAN
    std: float = MNIST_STD

    def as_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "std": self.std}


def normalize(images: torch.Tensor, norm: Normalization = Normalization()) -> torch.Tensor:
    """uint8 pixels `[N, 28, 28]` (or `[N, 784]`) in 0..255 -> float32 `[N, 784]`, standardized.

    Refuses anything but uint8: a float input has already been scaled by someone, and scaling
    it again (or not at all) is exactly the seed's train/test mismatch.
    """
    if not isinstance(images, torch.Tensor):
        images = torch.as_tensor(np.asarray(images))
    if images.dtype != torch.uint8:
        raise TypeError(f"normalize expects raw uint8 pixels (0..255), got {images.dtype}; "
                        "pass the images as loaded, not already scaled")
    if images.shape[-2:] == IMAGE_SHAPE:
        images = images.reshape(*images.shape[:-2], 28 * 28)
    if images.shape[-1] != 28 * 28:
        raise ValueError(f"normalize expects [N, 28, 28] or [N, 784] pixels, got {tuple(images.shape)}")
    # One fused affine map: x/255 then (x - mean)/std, i.e. x * a + b.
    scale = 1.0 / (255.0 * norm.std)
    return images.to(torch.float32).mul_(scale).sub_(norm.mean / norm.std)


class DigitsDataset(Dataset):
    """Digits kept as uint8 `[N, 28, 28]` (a quarter of the memory of floats), normalized per batch.

    `__getitems__` serves a whole batch with one tensor index, so a DataLoader with
    `collate_fn=batch_identity` never loops over single items in Python.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor | None = None,
                 norm: Normalization = Normalization()):
        if images.dtype != torch.uint8 or tuple(images.shape[1:]) != IMAGE_SHAPE:
            raise ValueError(f"images must be uint8 [N, 28, 28], got {images.dtype} {tuple(images.shape)}")
        if labels is not None and len(labels) != len(images):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels, self.norm = images, labels, norm

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        x = normalize(self.images[i:i + 1], self.norm)[0]
        return x if self.labels is None else (x, self.labels[i])

    def __getitems__(self, indices) -> tuple[torch.Tensor, torch.Tensor] | torch.Tensor:
        idx = torch.as_tensor(indices, dtype=torch.long)
        x = normalize(self.images.index_select(0, idx), self.norm)
        return x if self.labels is None else (x, self.labels.index_select(0, idx))


def batch_identity(batch):
    """`collate_fn` for datasets whose `__getitems__` already returns a batch."""
    return batch


class TensorBatches(Sampler):
    """Batches of indices as tensors: one permutation per epoch, sliced into batches.

    The default RandomSampler + BatchSampler yield every index as a Python int and gather them
    into lists, tens of microseconds per batch; here a batch is a view of one `randperm`.
    `generator` holds the shuffle state: a checkpoint saves it to resume with the same order.
    """

    def __init__(self, n: int, batch_size: int, shuffle: bool = False, seed: int = 0):
        self.n, self.batch_size, self.shuffle = n, batch_size, shuffle
        self.generator = torch.Generator().manual_seed(seed) if shuffle else None

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)

    def __iter__(self):
        order = torch.randperm(self.n, generator=self.generator) if self.shuffle else torch.arange(self.n)
        return iter(order.split(self.batch_size))


def make_loader(dataset: DigitsDataset, batch_size: int, shuffle: bool = False,
                seed: int = 0) -> DataLoader:
    """A single-process DataLoader over an in-memory dataset, one tensor index per batch.

    Workers would only copy batches between processes: the data is in memory and a batch is
    one index operation. The shuffle order is a function of `seed` alone.
    """
    return DataLoader(dataset, batch_sampler=TensorBatches(len(dataset), batch_size, shuffle, seed),
                      collate_fn=batch_identity, num_workers=0)


def batch_size_of(loader: DataLoader) -> int:
    return loader.batch_size or loader.batch_sampler.batch_size


def split_indices(labels: torch.Tensor, val_fraction: float | int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stratified, seeded train/validation split (scikit-learn), as index tensors."""
    from sklearn.model_selection import train_test_split

    train_idx, val_idx = train_test_split(np.arange(len(labels)), test_size=val_fraction,
                                          stratify=labels.numpy(), random_state=seed, shuffle=True)
    return torch.from_numpy(np.sort(train_idx)), torch.from_numpy(np.sort(val_idx))


@dataclass
class Prepared:
    """What 01_data hands on: all labelled images, the split, and where they came from."""

    images: torch.Tensor            # uint8 [N, 28, 28]
    labels: torch.Tensor            # int64 [N]
    train_idx: torch.Tensor         # int64, indices into images
    val_idx: torch.Tensor
    source: str                     # "mnist" or the CSV path
    parameters: dict = field(default_factory=dict)
    norm: Normalization = Normalization()

    def dataset(self, part: str) -> DigitsDataset:
        idx = {"train": self.train_idx, "val": self.val_idx}[part]
        return DigitsDataset(self.images[idx], self.labels[idx], self.norm)

    def with_validation_in_training(self) -> Prepared:
        """Every labelled digit in the training split, as a final submission is trained (a Kaggle
        entrant refits on training + validation). The normalization stays the training split's,
        and the validation split stays too, now inside training: its accuracy measures fit only."""
        return replace(self, train_idx=torch.cat([self.train_idx, self.val_idx]).sort().values,
                       parameters={**self.parameters, "validation_in_training": True})

    def fingerprint(self) -> dict:
        """Enough to tell that two machines hold the same prepared data and split."""
        h = hashlib.sha256()
        for t in (self.labels, self.train_idx, self.val_idx):
            h.update(t.numpy().tobytes())
        h.update(self.images[self.train_idx[:512]].numpy().tobytes())
        return {"source": self.source, "n_train": len(self.train_idx), "n_val": len(self.val_idx),
                "sha256": h.hexdigest()[:16]}

    def loaders(self, batch_size: int, seed: int, eval_batch_size: int = 2048) -> tuple[DataLoader, DataLoader]:
        """(shuffled train loader, ordered validation loader)."""
        return (make_loader(self.dataset("train"), batch_size, shuffle=True, seed=seed),
                make_loader(self.dataset("val"), eval_batch_size))


def check_source(source: str) -> str:
    """"mnist" or the path of an existing CSV file; anything else stops here, named."""
    if source == "mnist":
        return source
    if not isinstance(source, str) or not source.lower().endswith(".csv"):
        raise ValueError(f"parameter 'source': expected \"mnist\" or the path of a .csv file, got {source!r}")
    if not Path(source).expanduser().is_file():
        raise FileNotFoundError(f"parameter 'source': no such CSV file: {source}")
    return source


def prepare(source: str, val_fraction: float, seed: int, max_samples: int = 0) -> Prepared:
    """Load the labelled digits from `source` ("mnist" or a CSV path) and split them.

    `max_samples` > 0 keeps a stratified subset of that many digits first (quick runs).
    """
    if source == "mnist":
        images, labels = load_mnist("train")
    else:
        images, labels = read_digits_csv(source)
        if labels is None:
            raise ValueError(f"{source}: has no 'label' column; a training source needs labels "
                             "(an unlabelled test.csv belongs in 07_test_eval's kaggle_test_csv)")
    if 0 < max_samples < len(labels):
        keep, _ = split_indices(labels, len(labels) - max_samples, seed)  # exact count
        images, labels = images[keep], labels[keep]
    train_idx, val_idx = split_indices(labels, val_fraction, seed)
    return Prepared(images, labels, train_idx, val_idx, source,
                    {"source": source, "val_fraction": val_fraction, "seed": seed,
                     "max_samples": max_samples})


def save_prepared(prepared: Prepared, path: str | os.PathLike | None = None) -> Path:
    path = Path(path or paths.prepared_path())
    with store.atomic_path(path) as tmp:
        torch.save({"images": prepared.images, "labels": prepared.labels,
                    "train_idx": prepared.train_idx, "val_idx": prepared.val_idx,
                    "source": prepared.source, "parameters": prepared.parameters,
                    "normalization": prepared.norm.as_dict()}, tmp)
    return path


def load_prepared(path: str | os.PathLike | None = None) -> Prepared:
    path = Path(path or paths.prepared_path())
    if not path.exists():
        raise FileNotFoundError(f"{path}: no prepared data; run notebooks/01_data.ipynb first "
                                "(make reproduce runs it)")
    blob = torch.load(path, weights_only=True)
    return Prepared(blob["images"], blob["labels"], blob["train_idx"], blob["val_idx"],
                    blob["source"], blob["parameters"], Normalization(**blob["normalization"]))


class RandomShift:
    """Training-only augmentation: move each digit by up to `max_shift` pixels in x and y.

    Works on normalized batches `[N, 784]`: pad with the background value, then gather each
    image's shifted window through a precomputed index table, one table row per shift. The
    draws come from torch's global generator, so a seeded run is reproducible and resumable.
    """

    def __init__(self, max_shift: int = 2, norm: Normalization = Normalization()):
        self.max_shift = max_shift
        self.spec = {"kind": "shift", "max_shift": max_shift}   # recorded with the run
        self.background = -norm.mean / norm.std       # what a 0 pixel becomes
        side = 28 + 2 * max_shift
        rows = torch.arange(28).view(28, 1)
        cols = torch.arange(28).view(1, 28)
        shifts = [(dy, dx) for dy in range(-max_shift, max_shift + 1) for dx in range(-max_shift, max_shift + 1)]
        # index into the padded image of the pixel that lands at (r, c) after shifting by (dy, dx)
        self.table = torch.stack([((rows - dy + max_shift) * side + (cols - dx + max_shift)).reshape(-1)
                                  for dy, dx in shifts])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.max_shift == 0:
            return x
        m = self.max_shift
        padded = torch.nn.functional.pad(x.view(-1, 28, 28), (m, m, m, m), value=self.background)
        choice = torch.randint(len(self.table), (len(x),))
        return padded.reshape(len(x), -1).gather(1, self.table.to(x.device)[choice])


class RandomAffine:
    """Training-only augmentation, drawn per digit: rotation, scaling, shift, and an elastic warp.

    Each digit gets its own angle in +-`rotate` degrees, scale in 1 +- `scale`, shift in
    +-`shift` pixels and, with `elastic` > 0, a smooth random displacement of up to `elastic`
    pixels (offsets drawn on a coarse 4x4 grid and interpolated smoothly over the image: the warps
    of Simard et al. 2003, at a fraction of the cost of blurring a full random field). One
    `grid_sample` resamples the whole batch (bilinear). Works on normalized batches `[N, 784]`
    and keeps the background value outside the digit. Draws come from torch's global generator,
    so a seeded run is reproducible and resumable.
    """

    def __init__(self, rotate: float = 10.0, scale: float = 0.1, shift: float = 2.0, elastic: float = 0.0,
                 norm: Normalization = Normalization()):
        self.rotate, self.scale, self.shift, self.elastic = rotate, scale, shift, elastic
        self.spec = {"kind": "affine", "rotate": rotate, "scale": scale, "shift": shift, "elastic": elastic}
        self.background = -norm.mean / norm.std
        # pixel centres in grid_sample's units (the image spans [-1, 1]) as rows (x, y, 1), [784, 3]
        centres = (torch.arange(28, dtype=torch.float32) * 2 + 1) / 28 - 1
        base = torch.stack([centres.repeat(28), centres.repeat_interleave(28), torch.ones(784)], 1)
        # smooth interpolation from a 4x4 grid of offsets to every pixel: a product of 1-D hat
        # functions (bilinear), [784, 16]
        knots = torch.linspace(-1, 1, 4)
        hat = (1 - (centres.view(-1, 1) - knots.view(1, -1)).abs() * 1.5).clamp_min(0)   # [28, 4]
        hat = hat / hat.sum(1, keepdim=True)
        smooth = torch.einsum("ya,xb->yxab", hat, hat).reshape(784, 16)
        # Every pixel's sampling position is a linear combination of these 19 rows, with a digit's
        # affine (3) and elastic (16) coefficients: one plain matmul for the batch. (Batched
        # [n, 784, k] @ [n, k, 2] matmuls cost 10x more: they are thin, one per digit.)
        self.basis = torch.cat([base, smooth], 1).t().contiguous()                    # [19, 784]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        n = len(x)
        uniform = lambda *shape: torch.rand(*shape).mul_(2).sub_(1)  # noqa: E731  in [-1, 1)
        angle = uniform(n, 1) * (self.rotate * torch.pi / 180)
        zoom = 1 + uniform(n, 1) * self.scale
        move = uniform(n, 2) * (self.shift * 2 / 28)
        # grid_sample reads, for each output pixel, the input at a position: the inverse of
        # "rotate by angle, scale by zoom, move by shift", written out (affine_grid is slower here)
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        # how x, y and 1 feed the sampled x (first row) and y (second): [n, 2, 3]
        coef = torch.stack([torch.cat([cos, -sin, move[:, :1]], 1), torch.cat([sin, cos, move[:, 1:]], 1)], 1)
        if self.elastic > 0:
            offsets = uniform(n, 16, 2) * (self.elastic * 2 / 28)
            coef = torch.cat([coef, offsets.transpose(1, 2)], 2)               # [n, 2, 19]
        k = coef.shape[2]   # without the warp, only the affine rows of the basis
        grid = (coef.reshape(2 * n, k) @ self.basis[:k]).view(n, 2, 784).transpose(1, 2)
        grid = grid.reshape(n, 28, 28, 2).to(x.device)
        images = x.view(n, 1, 28, 28) - self.background          # background 0: what padding adds
        out = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return out.view(n, -1) + self.background
