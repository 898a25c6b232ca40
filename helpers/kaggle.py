"""Kaggle "Digit Recognizer" CSV files: read train.csv / test.csv into tensors, write submissions.

The format is a header naming `label` (train.csv only) and pixel0..pixel783, then one line per
image with whole numbers 0..255. Every error names the file and, where there is one, the row
(1-based, counting data rows only), the line of the file and the column.
"""
from __future__ import annotations

import csv
import math
import os
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from helpers.store import atomic_path

LABEL = "label"
SIDE = 28
PIXELS = [f"pixel{i}" for i in range(SIDE * SIDE)]
# Chunks of 5000 rows keep memory bounded whatever the file size (~8 MB of int16 each) and are large
# enough that pandas' per-call overhead does not show. int16 holds every legal value, and pandas
# refuses (rather than wraps) a larger one, which sends it to the slow path that names it.
CHUNK_ROWS = 5000
PARSE_DTYPE = np.int16
SUBMISSION_HEADER = ["ImageId", "Label"]
# Plain ASCII integers only: int() alone would also take '1_0' and non-ASCII digits, which pandas refuses.
_PLAIN_INTS = re.compile(r"[ \t]*[+-]?\d+[ \t]*(?:,[ \t]*[+-]?\d+[ \t]*)*", re.ASCII)


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


def _existing(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.is_file():
        raise CsvFileMissing(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    return path


def _whole_number(text: str, where: str, column: str) -> int:
    """One cell as an int, accepting what pandas' int parser accepts ('7', ' 7', '7.0')."""
    stripped = text.strip()
    if not stripped:
        raise CsvFormatError(f"{where}, column {column!r}: empty cell")
    try:
        number = float(stripped) if "_" not in stripped else None  # Python allows 1_000; CSV does not
    except ValueError:
        number = None
    if number is None:
        raise CsvFormatError(f"{where}, column {column!r}: non-numeric value {text!r}")
    if math.isnan(number):
        raise CsvFormatError(f"{where}, column {column!r}: NaN value {text!r}")
    if not number.is_integer():
        raise CsvFormatError(f"{where}, column {column!r}: value {text!r} is not a whole number")
    digits = stripped.lstrip("+-")
    return int(stripped) if digits.isascii() and digits.isdigit() else int(number)  # int() keeps huge values exact


def _check_header(path: Path, names: list[str]) -> int | None:
    """Raise unless the header is label (anywhere, or absent) plus pixel0..pixel783 in order.

    Returns the 0-based position of `label`, or None for a test file.
    """
    if names in ([], [""]):
        raise CsvFormatError(f"{path}: line 1 (the header) is blank; expected label,pixel0,...,pixel783")
    expected = set(PIXELS) | {LABEL}
    if not expected.intersection(names):
        raise CsvFormatError(f"{path}: header (line 1) names no pixel columns (it starts {','.join(names[:4])!r}); "
                             "is the header line missing? It should read label,pixel0,...,pixel783")
    seen: dict[str, int] = {}
    for pos, name in enumerate(names):
        if name in seen:
            raise CsvFormatError(f"{path}: header (line 1): duplicate column {name!r} "
                                 f"at columns {seen[name] + 1} and {pos + 1}")
        seen[name] = pos
    missing = [p for p in PIXELS if p not in seen]
    extra = [f"{n!r} (column {pos + 1})" for pos, n in enumerate(names) if n not in expected]
    problems = []
    if missing:
        more = ", ..." if len(missing) > 5 else ""
        problems.append(f"{len(missing)} pixel column(s) missing: {', '.join(map(repr, missing[:5]))}{more}")
    if extra:
        more = ", ..." if len(extra) > 5 else ""
        problems.append(f"{len(extra)} unexpected column(s): {', '.join(extra[:5])}{more}")
    if problems:
        raise CsvFormatError(f"{path}: header (line 1): " + "; ".join(problems))
    pixel_positions = [pos for pos, n in enumerate(names) if n != LABEL]
    for pos, want in zip(pixel_positions, PIXELS):
        if names[pos] != want:
            raise CsvFormatError(f"{path}: header (line 1): column {pos + 1} is {names[pos]!r}, "
                                 f"expected {want!r} (pixel columns must be in order)")
    return seen.get(LABEL)


def _count_rows(path: Path) -> int:
    """Data rows, counted as line breaks in binary (fast), so the arrays can be allocated once."""
    lines, last = 0, b"\n"
    with open(path, "rb") as fh:
        while block := fh.read(1 << 24):
            lines += block.count(b"\n")
            last = block[-1:]
    return lines + (last != b"\n") - 1  # a last line without a break still counts; the header does not


def _fill_fast(path: Path, names: list[str], label_pos: int | None,
               images: np.ndarray, labels: np.ndarray | None) -> int:
    """Fill the arrays with pandas' C parser; return how many rows were filled before it refused a chunk.

    A refusal only says that something is wrong somewhere in the chunk; `_fill_slow` finds out where.
    """
    pixel_cols = [i for i in range(len(names)) if i != label_pos]
    done = 0
    try:  # every way out of this block, clean or not, hands the rest of the file to `_fill_slow`
        with warnings.catch_warnings():
            # pandas drops the extra fields of a file whose every row is too long with only a warning
            warnings.simplefilter("error", pd.errors.ParserWarning)
            warnings.simplefilter("ignore", RuntimeWarning)  # 'inf' warns on its way to a ValueError
            with pd.read_csv(path, chunksize=CHUNK_ROWS, dtype=PARSE_DTYPE, na_filter=False, index_col=False,
                             skip_blank_lines=False, engine="c") as reader:
                for chunk in reader:
                    values = chunk.to_numpy()
                    if values.min() < 0 or values.max() > 255 or (
                            label_pos is not None and values[:, label_pos].max() > 9):
                        break  # out of range somewhere in this chunk
                    end = done + len(values)
                    images[done:end] = values[:, pixel_cols].reshape(-1, SIDE, SIDE)
                    if labels is not None:
                        labels[done:end] = values[:, label_pos]
                    done = end
    except (ValueError, OverflowError, pd.errors.ParserWarning):  # ParserError is a ValueError
        pass
    return done


def _fill_slow(path: Path, names: list[str], label_pos: int | None,
               images: np.ndarray, labels: np.ndarray | None, start: int) -> None:
    """Check every cell from data row `start + 1` on in Python, raising at the first bad one."""
    row = start
    tops = [9 if name == LABEL else 255 for name in names]
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as fh:
        for _ in range(start + 1):  # the header and the rows pandas already read
            fh.readline()
        for row, fields in enumerate(csv.reader(fh), start + 1):
            where = _where(path, row)
            if not fields or fields == [""]:
                raise CsvFormatError(f"{where} is blank")
            if len(fields) != len(names):
                raise CsvFormatError(f"{where} has {len(fields)} fields, expected {len(names)} like the header")
            if row > len(images):
                raise CsvFormatError(f"{where}: more rows than line breaks; quoted line breaks are not allowed")
            if _PLAIN_INTS.fullmatch(",".join(fields)):  # the usual row: parse it at C speed
                values = list(map(int, fields))
            else:
                values = [_whole_number(text, where, name) for text, name in zip(fields, names)]
            if min(values) < 0 or max(values) > 255 or (label_pos is not None and values[label_pos] > 9):
                for name, value, top in zip(names, values, tops):
                    if not 0 <= value <= top:
                        raise CsvFormatError(f"{where}, column {name!r}: value {value} is outside 0..{top}")
            if label_pos is not None:
                labels[row - 1] = values.pop(label_pos)
            images[row - 1] = np.array(values, dtype=np.uint8).reshape(SIDE, SIDE)
    if row != len(images):
        raise CsvFormatError(f"{path}: read {row} rows but the file has {len(images)} lines of data")


def read_digits_csv(path: str | os.PathLike) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Images as uint8 [N, 28, 28] and labels as int64 [N] (None for a file without `label`)."""
    path = _existing(path)
    if path.stat().st_size == 0:
        raise CsvFormatError(f"{path}: the file is empty (0 bytes); expected a header and data rows")
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as fh:
        names = next(csv.reader(fh), [])
    label_pos = _check_header(path, names)
    n = _count_rows(path)
    if n <= 0:
        raise CsvFormatError(f"{path}: the file has a header but no data rows")
    images = np.empty((n, SIDE, SIDE), dtype=np.uint8)
    labels = np.empty(n, dtype=np.int64) if label_pos is not None else None
    done = _fill_fast(path, names, label_pos, images, labels)
    if done < n:
        _fill_slow(path, names, label_pos, images, labels, start=done)
    return torch.from_numpy(images), None if labels is None else torch.from_numpy(labels)


def _as_predictions(predictions) -> np.ndarray:
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
    return array


def write_submission(path: str | os.PathLike, predictions) -> Path:
    """Write `ImageId,Label` rows with ids from 1, atomically: on any error the old file stays."""
    labels = _as_predictions(predictions).tolist()
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as fh:
            fh.write(",".join(SUBMISSION_HEADER) + "\n")
            fh.writelines(f"{i},{label}\n" for i, label in enumerate(labels, 1))
    return path


def read_submission(path: str | os.PathLike) -> torch.Tensor:
    """The labels of a submission file as int64 [N], checking header, ids 1..N and labels 0..9."""
    path = _existing(path)
    labels = []
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header = next(reader, [])
        if header != SUBMISSION_HEADER:
            raise CsvFormatError(f"{path}: header (line 1) is {','.join(header)!r}, expected 'ImageId,Label'")
        for row, fields in enumerate(reader, 1):
            where = _where(path, row)
            if len(fields) != 2:
                raise CsvFormatError(f"{where} has {len(fields)} fields, expected 2 (ImageId,Label)")
            image_id = _whole_number(fields[0], where, "ImageId")
            if image_id != row:
                raise CsvFormatError(f"{where}, column 'ImageId': {image_id}, expected {row}")
            label = _whole_number(fields[1], where, "Label")
            if not 0 <= label <= 9:
                raise CsvFormatError(f"{where}, column 'Label': value {label} is outside 0..9")
            labels.append(label)
    if not labels:
        raise CsvFormatError(f"{path}: the file has a header but no data rows")
    return torch.tensor(labels, dtype=torch.int64)


def to_frame(images: torch.Tensor, labels: torch.Tensor | None = None) -> pd.DataFrame:
    """Digits in Kaggle's layout: `label` first (when given), then pixel0..pixel783."""
    frame = pd.DataFrame(images.reshape(len(images), -1).numpy(), columns=PIXELS)
    if labels is not None:
        frame.insert(0, LABEL, labels.numpy())
    return frame
