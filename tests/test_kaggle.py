"""helpers.kaggle: Kaggle Digit Recognizer CSVs in, submissions out, and errors that say where."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import kaggle
from helpers.kaggle import (PIXELS, CsvFileMissing, CsvFormatError, label_last, move_label_last,
                            read_digits_csv, read_submission, write_submission)

LABEL_POSITIONS = {"first": 0, "middle": 392, "last": 784}


def digits_table(n: int, label_at: str | None, seed: int = 0):
    """Header, rows (lists of strings, ready to edit) and the arrays they encode."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 784), dtype=np.uint8)
    labels = rng.integers(0, 10, n)
    header = list(PIXELS)
    rows = [[str(v) for v in image] for image in images]
    if label_at is not None:
        pos = LABEL_POSITIONS[label_at]
        header.insert(pos, "label")
        for row, label in zip(rows, labels):
            row.insert(pos, str(label))
    return header, rows, images.reshape(n, 28, 28), labels


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    path.write_text("\n".join(",".join(fields) for fields in [header, *rows]) + "\n")
    return path


@pytest.fixture
def make_csv(tmp_path):
    """make_csv(n, label_at, edit=None) -> (path, images, labels); `edit(header, rows)` breaks it first."""
    def make(n: int = 4, label_at: str | None = "first", edit=None, name: str = "train.csv", seed: int = 0):
        header, rows, images, labels = digits_table(n, label_at, seed)
        if edit is not None:
            edit(header, rows)
        return write_csv(tmp_path / name, header, rows), images, labels
    return make


def error_of(path) -> str:
    with pytest.raises(CsvFormatError) as caught:
        read_digits_csv(path)
    message = str(caught.value)
    assert str(path) in message  # every message names the file
    return message


# --- moving the label column -------------------------------------------------------------------

@pytest.mark.parametrize("columns, expected", [
    (["label", "pixel0", "pixel1"], ["pixel0", "pixel1", "label"]),
    (["pixel0", "label", "pixel1"], ["pixel0", "pixel1", "label"]),
    (["pixel0", "pixel1", "label"], ["pixel0", "pixel1", "label"]),
    (["pixel0", "pixel1"], ["pixel0", "pixel1"]),
])
def test_move_label_last(columns, expected):
    assert move_label_last(columns) == expected


def test_label_last_on_a_frame(make_csv):
    path, _, labels = make_csv(n=3, label_at="first")
    frame = label_last(pd.read_csv(path))
    assert list(frame.columns) == PIXELS + ["label"]
    assert frame["label"].tolist() == labels.tolist()


# --- reading valid files -----------------------------------------------------------------------

@pytest.mark.parametrize("label_at", ["first", "middle", "last"])
def test_round_trip_wherever_the_label_stands(make_csv, label_at):
    path, images, labels = make_csv(n=5, label_at=label_at)
    x, y = read_digits_csv(path)
    assert x.dtype == torch.uint8 and x.shape == (5, 28, 28)
    assert y.dtype == torch.int64 and y.shape == (5,)
    assert torch.equal(x, torch.from_numpy(images))
    assert torch.equal(y, torch.from_numpy(labels))


def test_label_moved_last_reads_the_same(make_csv, tmp_path):
    path, _, _ = make_csv(n=5, label_at="first")
    moved = tmp_path / "moved.csv"
    label_last(pd.read_csv(path)).to_csv(moved, index=False)
    for got, want in zip(read_digits_csv(moved), read_digits_csv(path)):
        assert torch.equal(got, want)


def test_test_file_has_no_labels(make_csv):
    path, images, _ = make_csv(n=3, label_at=None, name="test.csv")
    x, y = read_digits_csv(path)
    assert y is None
    assert torch.equal(x, torch.from_numpy(images))


def test_many_chunks_and_no_final_line_break(make_csv, monkeypatch):
    monkeypatch.setattr(kaggle, "CHUNK_ROWS", 3)
    path, images, labels = make_csv(n=10, label_at="middle")
    path.write_text(path.read_text().rstrip("\n"))
    x, y = read_digits_csv(path)
    assert torch.equal(x, torch.from_numpy(images)) and torch.equal(y, torch.from_numpy(labels))


def test_one_row_chunks_read_the_same(make_csv, monkeypatch):
    path, images, labels = make_csv(n=4, label_at="middle")
    monkeypatch.setattr(kaggle, "CHUNK_ROWS", 1)
    x, y = read_digits_csv(path)
    assert torch.equal(x, torch.from_numpy(images)) and torch.equal(y, torch.from_numpy(labels))


def test_whole_numbers_written_as_decimals_are_accepted(make_csv):
    def edit(header, rows):
        rows[0][1] = "7.0"
    path, _, _ = make_csv(n=2, label_at="first", edit=edit)
    assert read_digits_csv(path)[0][0, 0, 0] == 7


# --- bad files -----------------------------------------------------------------------------------

def test_missing_file(tmp_path):
    path = tmp_path / "nope.csv"
    with pytest.raises(CsvFileMissing, match="nope.csv: no such file") as caught:
        read_digits_csv(path)
    assert isinstance(caught.value, FileNotFoundError) and isinstance(caught.value, ValueError)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    assert "empty (0 bytes)" in error_of(path)


@pytest.mark.parametrize("ending", ["\n", ""])
def test_header_only(tmp_path, ending):
    path = tmp_path / "header.csv"
    path.write_text(",".join(["label", *PIXELS]) + ending)
    assert "header but no data rows" in error_of(path)


def test_blank_header(tmp_path):
    path = tmp_path / "blank.csv"
    path.write_text("\n1,2\n")
    assert "line 1 (the header) is blank" in error_of(path)


def test_header_line_missing(make_csv, tmp_path):
    header, rows, _, _ = digits_table(2, "first")
    path = write_csv(tmp_path / "noheader.csv", rows[0], rows[1:])
    assert "is the header line missing" in error_of(path)


def test_missing_pixel_columns(make_csv):
    def edit(header, rows):
        for fields in [header, *rows]:
            del fields[6:8]  # pixel5, pixel6 behind the label
    message = error_of(make_csv(edit=edit)[0])
    assert "2 pixel column(s) missing: 'pixel5', 'pixel6'" in message


def test_many_missing_pixel_columns_are_abbreviated(make_csv):
    def edit(header, rows):
        for fields in [header, *rows]:
            del fields[100:]
    message = error_of(make_csv(edit=edit)[0])
    assert "685 pixel column(s) missing: 'pixel99', 'pixel100', 'pixel101', 'pixel102', 'pixel103', ..." in message


def test_extra_columns(make_csv):
    def edit(header, rows):
        header += ["extra", "Unnamed: 0"]
        for fields in rows:
            fields += ["0", "0"]
    message = error_of(make_csv(edit=edit)[0])
    assert "2 unexpected column(s): 'extra' (column 786), 'Unnamed: 0' (column 787)" in message


def test_misordered_pixel_columns(make_csv):
    def edit(header, rows):
        header[5], header[8] = header[8], header[5]  # label first: pixel4 is column 6
    assert "column 6 is 'pixel7', expected 'pixel4'" in error_of(make_csv(edit=edit)[0])


def test_duplicate_columns(make_csv):
    def edit(header, rows):
        header[10] = "pixel3"  # pixel3 is column 5, pixel9 column 11
    assert "duplicate column 'pixel3' at columns 5 and 11" in error_of(make_csv(edit=edit)[0])


def test_duplicate_label_column(make_csv):
    def edit(header, rows):
        header.append("label")
        for fields in rows:
            fields.append("1")
    assert "duplicate column 'label' at columns 1 and 786" in error_of(make_csv(edit=edit)[0])


# Cell errors: (text put in row 3, what the message must say).
PIXEL_CELLS = [
    ("abc", "non-numeric value 'abc'"),
    ("", "empty cell"),
    ("NaN", "NaN value 'NaN'"),
    ("3.5", "value '3.5' is not a whole number"),
    ("1_0", "non-numeric value '1_0'"),
    ("inf", "value 'inf' is not a whole number"),
    ("256", "value 256 is outside 0..255"),
    ("-1", "value -1 is outside 0..255"),
    ("70000", "value 70000 is outside 0..255"),  # too big for the fast parser's int16: slow path
]
LABEL_CELLS = [
    ("10", "value 10 is outside 0..9"),
    ("-1", "value -1 is outside 0..9"),
    ("2.5", "value '2.5' is not a whole number"),
    ("seven", "non-numeric value 'seven'"),
    ("", "empty cell"),
]


@pytest.mark.parametrize("label_at", ["first", "last"])
@pytest.mark.parametrize("text, says", PIXEL_CELLS)
def test_bad_pixel_cell(make_csv, label_at, text, says):
    def edit(header, rows):
        rows[2][header.index("pixel100")] = text
    message = error_of(make_csv(n=5, label_at=label_at, edit=edit)[0])
    assert f"row 3 (line 4 of the file), column 'pixel100': {says}" in message


@pytest.mark.parametrize("text, says", LABEL_CELLS)
def test_bad_label_cell(make_csv, text, says):
    def edit(header, rows):
        rows[2][header.index("label")] = text
    message = error_of(make_csv(n=5, label_at="middle", edit=edit)[0])
    assert f"row 3 (line 4 of the file), column 'label': {says}" in message


@pytest.mark.parametrize("text, says", [("abc", "non-numeric value 'abc'"), ("300", "value 300 is outside")])
def test_bad_cell_in_a_later_chunk_names_the_right_row(make_csv, monkeypatch, text, says):
    monkeypatch.setattr(kaggle, "CHUNK_ROWS", 3)
    def edit(header, rows):
        rows[7][header.index("pixel783")] = text
    message = error_of(make_csv(n=10, label_at="first", edit=edit)[0])
    assert f"row 8 (line 9 of the file), column 'pixel783': {says}" in message


def test_first_bad_cell_is_reported(make_csv):
    def edit(header, rows):
        rows[3][5] = "999"
        rows[1][700] = "x"  # label first: pixel699
    assert "row 2 (line 3 of the file), column 'pixel699'" in error_of(make_csv(n=5, edit=edit)[0])


@pytest.mark.parametrize("change, fields", [(lambda row: row.append("0"), 786), (lambda row: row.pop(), 784)])
def test_row_with_wrong_number_of_fields(make_csv, change, fields):
    def edit(header, rows):
        change(rows[1])
    message = error_of(make_csv(n=4, edit=edit)[0])
    assert f"row 2 (line 3 of the file) has {fields} fields, expected 785" in message


def test_every_row_too_long(make_csv):
    # pandas would silently drop the extra field of each row; the reader must not
    def edit(header, rows):
        for fields in rows:
            fields.append("0")
    assert "row 1 (line 2 of the file) has 786 fields, expected 785" in error_of(make_csv(n=3, edit=edit)[0])


def test_blank_line_between_rows(make_csv):
    path, _, _ = make_csv(n=4)
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:3] + [""] + lines[3:]) + "\n")
    assert "row 3 (line 4 of the file) is blank" in error_of(path)


def test_blank_line_at_the_end(make_csv):
    path, _, _ = make_csv(n=4)
    path.write_text(path.read_text() + "\n")
    assert "row 5 (line 6 of the file) is blank" in error_of(path)


# --- submissions -------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", [torch.tensor, np.array, list])
def test_submission_format(tmp_path, kind):
    predictions = [3, 0, 9, 9, 1]
    path = write_submission(tmp_path / "out" / "submission.csv", kind(predictions))
    lines = path.read_text().splitlines()
    assert lines[0] == "ImageId,Label"
    assert len(lines) == 1 + len(predictions)
    assert lines[1:] == [f"{i},{p}" for i, p in enumerate(predictions, 1)]
    assert read_submission(path).tolist() == predictions


@pytest.mark.parametrize("predictions, says", [
    (torch.tensor([1.0, 2.0]), "must be integers 0..9, got dtype float32"),
    (np.array([[1, 2], [3, 4]]), "must be 1-D"),
    (np.array([True, False]), "must be integers"),
    ([], "predictions are empty"),
    ([1, 2, 10, 11], r"prediction 2 \(ImageId 3\) is 10, outside 0..9 \(2 such"),
    ([-1], r"ImageId 1\) is -1"),
])
def test_invalid_predictions_write_nothing(tmp_path, predictions, says):
    path = tmp_path / "submission.csv"
    with pytest.raises(ValueError, match=says):
        write_submission(path, predictions)
    assert list(tmp_path.iterdir()) == []  # neither the file nor a temporary one


def test_failed_write_leaves_the_old_submission(tmp_path):
    path = write_submission(tmp_path / "submission.csv", [1, 2, 3])
    before = path.read_bytes()
    with pytest.raises(ValueError):
        write_submission(path, [1, 2, 12])
    assert path.read_bytes() == before
    assert list(tmp_path.iterdir()) == [path]


@pytest.mark.parametrize("text, says", [
    ("ImageId,Label\n1,3\n3,4\n", "row 2 (line 3 of the file), column 'ImageId': 3, expected 2"),
    ("ImageId,Label\n1,12\n", "row 1 (line 2 of the file), column 'Label': value 12 is outside 0..9"),
    ("ImageId,Label\n1,x\n", "column 'Label': non-numeric value 'x'"),
    ("ImageId,Label\n1,3,4\n", "row 1 (line 2 of the file) has 3 fields, expected 2"),
    ("Id,Label\n1,3\n", "header (line 1) is 'Id,Label', expected 'ImageId,Label'"),
    ("ImageId,Label\n", "header but no data rows"),
])
def test_bad_submission_file(tmp_path, text, says):
    path = tmp_path / "submission.csv"
    path.write_text(text)
    with pytest.raises(CsvFormatError, match=re.escape(says)):
        read_submission(path)


def test_write_interrupted_midway_leaves_the_old_submission(tmp_path, monkeypatch):
    path = write_submission(tmp_path / "submission.csv", [1, 2, 3])
    before = path.read_bytes()
    real_open = open

    class DiskFull:  # the header goes out, then the disk fills up
        def __init__(self, *args, **kwargs):
            self.fh = real_open(*args, **kwargs)
        def __enter__(self):
            return self
        def __exit__(self, *exc):
            self.fh.close()
        def write(self, text):
            self.fh.write(text)
        def writelines(self, lines):
            raise OSError("disk full")

    monkeypatch.setattr(kaggle, "open", DiskFull, raising=False)
    with pytest.raises(OSError, match="disk full"):
        write_submission(path, [4, 5, 6])
    assert path.read_bytes() == before
    assert list(tmp_path.iterdir()) == [path]
