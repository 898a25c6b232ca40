"""Where things live, built from the repository root, never from the working directory.

`data/` and `figures/` can be moved with DIGITS_DATA_DIR / DIGITS_FIGURES_DIR (the CI smoke run
sends a whole small reproduce into a temporary folder that way); the raw MNIST archives can be
moved on their own with MNIST_DATA_DIR. Each is read at call time so tests can set them. A
relative setting is taken from the repository root, never from the working directory: a kernel
runs in notebooks/, its worker processes in the root, and both must find the same folder.
"""
from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"


def _env_dir(name: str, default: Path) -> Path:
    value = os.environ.get(name)
    return (ROOT / Path(value).expanduser()).resolve() if value else default


def data_dir() -> Path:
    """Prepared data, checkpoints and study storage (`data/`)."""
    return _env_dir("DIGITS_DATA_DIR", ROOT / "data")


def figures_dir() -> Path:
    """Figures and the JSON results beside them (`figures/`)."""
    return _env_dir("DIGITS_FIGURES_DIR", ROOT / "figures")


def raw_dir() -> Path:
    """The four MNIST IDX archives (`data/raw/`)."""
    return _env_dir("MNIST_DATA_DIR", data_dir() / "raw")


def prepared_path() -> Path:
    """What 01_data hands to the later notebooks: images, labels, split, source."""
    return data_dir() / "prepared.pt"


def show(path: Path) -> str:
    """`path` relative to the repository when it lies inside it (for printing), else absolute."""
    path = Path(path)
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
