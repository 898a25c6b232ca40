"""Kaggle "Digit Recognizer" CSV files: read train.csv / test.csv into tensors, write submissions.

The format is a header naming `label` (train.csv only) and pixel0..pixel783, then one line per
image with whole numbers 0..255. pandas' C parser reads every file; only when it refuses one does
`_find_fault` look again, to say which file, row (1-based, counting data rows only), line and column.
"""
from __future__ import annotations

import csv
import itertools
import math
import os
import warnings
from pathlib import Path
from typing import NoReturn

import numpy as np
import pandas as pd
import torch

from helpers.store import atomic_path

LABEL = "label"
SIDE = 28
PIXELS = [f"pixel{i}" for i in range(SIDE * SIDE)]
# Chunks keep memory bounded whatever the file size (~4 MB of uint8 each), and bound how much of a
# refused file `_find_fault` has to split into strings.
CHUNK_ROWS = 5000
SUBMISSION_HEADER = ["ImageId", "Label"]


class CsvFormatError(ValueError):
    """A digits or submission CSV that breaks the Kaggle format; the message says what and where."""


class CsvFileMissing(CsvFormatError, FileNotFoundError):
    """Also a FileNotFoundError, so code that catches either kind of error sees it."""


def move_label_last(columns: list[str]) -> list[str]:
    """The column order the seed project used: pixel columns as they stand, then `label` (if any)."""
    return [c for c in columns if c != LABEL] + [c for c in columns if c == LABEL]


def label_last(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with its `label` column moved to the end, as `read_digits_csv` arranges the data."""
    return frame[move_label_last(list(frame.columns))]


def _where(path: Path, row: int) -> str:
    # Line = row + 1 because the header is line 1; the format has no quoted line breaks.
    return f"{path}: row {row} (line {row + 1} of the file)"


def _header(path: str | os.PathLike) -> tuple[Path, list[str]]:
    path = Path(path)
    if not path.is_file():
        raise CsvFileMissing(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    if path.stat().st_size == 0:
        raise CsvFormatError(f"{path}: the file is empty (0 bytes); expected a header and data rows")
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as fh:
        return path, next(csv.reader(fh), [])


def _check_digits_header(path: Path, names: list[str]) -> None:
    """Raise unless the header is label (anywhere, or absent) plus pixel0..pixel783 in order."""
    if names in ([], [""]):
        raise CsvFormatError(f"{path}: line 1 (the header) is blank; expected label,pixel0,...,pixel783")
    expected = set(PIXELS) | {LABEL}
    if not expected.intersection(names):
        raise CsvFormatError(f"{path}: header (line 1) names no pixel columns (it starts {','.join(names[:4])!r}); "
                             "is the header line missing? It should read label,pixel0,...,pixel783")
    for pos, name in enumerate(names):
        if name in names[:pos]:
            raise CsvFormatError(f"{path}: header (line 1): duplicate column {name!r} "
                                 f"at columns {names.index(name) + 1} and {pos + 1}")
    missing = [repr(p) for p in PIXELS if p not in names]
    extra = [f"{n!r} (column {pos + 1})" for pos, n in enumerate(names) if n not in expected]
    problems = [f"{len(found)} {what}: {', '.join(found[:5])}{', ...' if len(found) > 5 else ''}"
                for what, found in (("pixel column(s) missing", missing), ("unexpected column(s)", extra)) if found]
    if problems:
        raise CsvFormatError(f"{path}: header (line 1): " + "; ".join(problems))
    for pos, want in zip([pos for pos, n in enumerate(names) if n != LABEL], PIXELS):
        if names[pos] != want:
            raise CsvFormatError(f"{path}: header (line 1): column {pos + 1} is {names[pos]!r}, "
                                 f"expected {want!r} (pixel columns must be in order)")


def _parse(path: Path, names: list[str], tops: np.ndarray, dtype) -> np.ndarray:
    """All data rows as one [rows, columns] array, each column within 0..its top, or a CsvFormatError.

    `dtype` is the narrowest that holds every legal value: pandas refuses (never wraps) a value that
    does not fit, and that, like any other refusal, hands the chunk to `_find_fault`.
    """
    chunks, done = [], 0
    try:
        with warnings.catch_warnings():
            # pandas drops the extra fields of a file whose every row is too long with only a warning
            warnings.simplefilter("error", pd.errors.ParserWarning)
            warnings.simplefilter("ignore", RuntimeWarning)  # 'inf' warns on its way to a ValueError
            with pd.read_csv(path, chunksize=CHUNK_ROWS, dtype=dtype, na_filter=False, index_col=False,
                             skip_blank_lines=False, engine="c") as reader:
                for chunk in reader:
                    values = chunk.to_numpy()
                    if ((values < 0) | (values > tops)).any():
                        raise ValueError("a value out of range")
                    chunks.append(values)
                    done += len(values)
    except (ValueError, OverflowError, pd.errors.ParserWarning) as exc:  # ParserError is a ValueError
        _find_fault(path, names, tops, done, exc)
    if not done:
        raise CsvFormatError(f"{path}: the file has a header but no data rows")
    return np.concatenate(chunks)


def _find_fault(path: Path, names: list[str], tops: np.ndarray, done: int, exc: Exception) -> NoReturn:
    """Raise an error naming the first bad row or cell after the `done` rows pandas accepted.

    csv splits the lines (a block at a time) and pandas checks a block's cells at once.
    """
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as fh:
        rows = csv.reader(itertools.islice(fh, done + 1, None))  # past the header and the good rows
        for first in itertools.count(done + 1, CHUNK_ROWS):
            if not (block := list(itertools.islice(rows, CHUNK_ROWS))):
                break
            whole = next((i for i, fields in enumerate(block) if len(fields) != len(names)), len(block))
            cells = np.array(block[:whole], dtype=object).reshape(whole, len(names))
            numbers = pd.to_numeric(cells.ravel(), errors="coerce").reshape(cells.shape)
            bad = np.argwhere(~((numbers >= 0) & (numbers <= tops) & (numbers == np.floor(numbers))))  # NaN fails all
            if len(bad):
                row, col = bad[0]
                raise CsvFormatError(f"{_where(path, first + row)}, column {names[col]!r}: "
                                     f"{_problem(cells[row, col], tops[col])}")
            if whole < len(block):
                fields, where = block[whole], _where(path, first + whole)
                raise CsvFormatError(f"{where} is blank" if not fields else
                                     f"{where} has {len(fields)} fields, expected {len(names)} like the header")
    raise CsvFormatError(f"{path}: pandas refused the rows after row {done} ({exc}), but no bad cell was found")


def _problem(text: str, top: int) -> str:
    """What is wrong with one cell that is not a whole number in 0..top."""
    if not text.strip():
        return "empty cell"
    try:
        number = float(text.replace("_", "x"))  # Python's float takes 1_000; CSV readers do not
    except ValueError:
        return f"non-numeric value {text!r}"
    if math.isnan(number):
        return f"NaN value {text!r}"
    if not number.is_integer():
        return f"value {text!r} is not a whole number"
    return f"value {int(number)} is outside 0..{top}"


def read_digits_csv(path: str | os.PathLike) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Images as uint8 [N, 28, 28] and labels as int64 [N] (None for a file without `label`)."""
    path, names = _header(path)
    _check_digits_header(path, names)
    values = _parse(path, names, np.array([9 if n == LABEL else 255 for n in names]), np.uint8)
    images = values[:, [i for i, n in enumerate(names) if n != LABEL]].reshape(-1, SIDE, SIDE)
    labels = torch.from_numpy(values[:, names.index(LABEL)].astype(np.int64)) if LABEL in names else None
    return torch.from_numpy(images), labels


def write_submission(path: str | os.PathLike, predictions) -> Path:
    """Write `ImageId,Label` rows with ids from 1, atomically: on any error the old file stays."""
    array = predictions.detach().cpu().numpy() if isinstance(predictions, torch.Tensor) else np.asarray(predictions)
    if array.ndim != 1:
        raise ValueError(f"predictions must be 1-D, one label per test image; got shape {tuple(array.shape)}")
    if len(array) == 0:
        raise ValueError("predictions are empty; a submission needs one label per test image")
    if array.dtype == bool or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"predictions must be integers 0..9, got dtype {array.dtype} "
                         "(take .argmax(1) of the model output)")
    bad = np.flatnonzero((array < 0) | (array > 9))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"prediction {i} (ImageId {i + 1}) is {array[i]}, outside 0..9 "
                         f"({bad.size} such value(s) in all)")
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as fh:
            fh.write(",".join(SUBMISSION_HEADER) + "\n")
            fh.writelines(f"{i},{label}\n" for i, label in enumerate(array.tolist(), 1))
    return path


def read_submission(path: str | os.PathLike) -> torch.Tensor:
    """The labels of a submission file as int64 [N], checking header, ids 1..N and labels 0..9."""
    path, names = _header(path)
    if names != SUBMISSION_HEADER:
        raise CsvFormatError(f"{path}: header (line 1) is {','.join(names)!r}, expected 'ImageId,Label'")
    values = _parse(path, names, np.array([np.iinfo(np.int32).max, 9]), np.int32)
    wrong = np.flatnonzero(values[:, 0] != np.arange(1, len(values) + 1))
    if wrong.size:
        row = int(wrong[0]) + 1
        raise CsvFormatError(f"{_where(path, row)}, column 'ImageId': {values[row - 1, 0]}, expected {row}")
    return torch.from_numpy(values[:, 1].astype(np.int64))


def to_frame(images: torch.Tensor, labels: torch.Tensor | None = None) -> pd.DataFrame:
    """Digits in Kaggle's layout: `label` first (when given), then pixel0..pixel783."""
    frame = pd.DataFrame(images.reshape(len(images), -1).numpy(), columns=PIXELS)
    if labels is not None:
        frame.insert(0, LABEL, labels.numpy())
    return frame
