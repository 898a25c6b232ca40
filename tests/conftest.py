"""Shared test set-up: no test writes into the repository's data/ or figures/."""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

from helpers import paths

# Small models train faster on one thread, and results do not depend on how busy the machine is.
torch.set_num_threads(1)

# Every test gets private data/ and figures/ folders (below); these session-wide ones catch what
# outlives its test (a study thread still winding down after a failure), never the checkout's.
_SESSION_DIR = tempfile.mkdtemp(prefix="digits-tests-")
os.environ["DIGITS_DATA_DIR"] = os.path.join(_SESSION_DIR, "data")
os.environ["DIGITS_FIGURES_DIR"] = os.path.join(_SESSION_DIR, "figures")
atexit.register(shutil.rmtree, _SESSION_DIR, ignore_errors=True)

# Offline machines read the archives from the shared folder (CI sets this too).
SHARED_MNIST = paths.ROOT.parent / "shared" / "mnist"
if "MNIST_MIRROR" not in os.environ and SHARED_MNIST.is_dir():
    os.environ["MNIST_MIRROR"] = str(SHARED_MNIST)


@pytest.fixture(autouse=True)
def _private_dirs(tmp_path, monkeypatch):
    monkeypatch.setenv("DIGITS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DIGITS_FIGURES_DIR", str(tmp_path / "figures"))
    monkeypatch.setenv("DIGITS_HEADLESS", "1")


@pytest.fixture(scope="session")
def mnist_raw(tmp_path_factory) -> Path:
    """One copy of the MNIST archives for the whole session (fetched from MNIST_MIRROR)."""
    from helpers import mnist

    folder = tmp_path_factory.mktemp("raw")
    for split in ("train", "test"):
        mnist.load_mnist(split, data_dir=folder, progress=False)
    return folder


def synthetic_digits(n: int = 600, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Learnable fake digits: class c lights up a band of rows, plus noise. Fast to train on."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 10
    images = torch.randint(0, 60, (n, 28, 28), generator=g, dtype=torch.uint8)
    for c in range(10):
        images[labels == c, 2 + 2 * c:4 + 2 * c, 4:24] = 250
    return images, labels


@pytest.fixture
def small_prepared():
    from helpers import data

    images, labels = synthetic_digits(600)
    train_idx, val_idx = data.split_indices(labels, 0.2, 0)
    return data.Prepared(images, labels, train_idx, val_idx, "synthetic", {"source": "synthetic"})
