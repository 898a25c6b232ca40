"""The Kaggle round trip (helpers.submit): the competition's files, scoring, the refit's data."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from helpers import data, kaggle, paths, submit
from conftest import synthetic_digits


def test_export_writes_the_competition_format_without_test_labels(tmp_path):
    images, labels = synthetic_digits(50)
    train_csv, test_csv = submit.export(tmp_path, images[:40], labels[:40], images[40:])
    assert train_csv.read_text().splitlines()[0] == ",".join(["label", *kaggle.PIXELS])
    assert test_csv.read_text().splitlines()[0] == ",".join(kaggle.PIXELS)
    back, back_labels = kaggle.read_digits_csv(train_csv)
    assert torch.equal(back, images[:40]) and torch.equal(back_labels, labels[:40])
    test_back, test_labels = kaggle.read_digits_csv(test_csv)
    assert torch.equal(test_back, images[40:]) and test_labels is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["test.csv", "train.csv"]  # nothing half-written


def test_score_counts_the_right_labels_and_names_a_short_submission(tmp_path):
    truth = torch.tensor([1, 2, 3, 4])
    written = kaggle.write_submission(tmp_path / "submission.csv", torch.tensor([1, 2, 0, 4]))
    s = submit.score(written, truth)
    assert (s["correct"], s["n"], s["accuracy"]) == (3, 4, 0.75) and s["wilson"][0] < 0.75 < s["wilson"][1]
    with pytest.raises(kaggle.CsvFormatError, match=r"submission\.csv: 4 predictions for 5 test images"):
        submit.score(written, torch.tensor([1, 2, 3, 4, 5]))


def test_refit_trains_on_training_and_validation_together(small_prepared):
    refit = small_prepared.with_validation_in_training()
    assert torch.equal(refit.train_idx, torch.arange(len(small_prepared.images)))
    assert torch.equal(refit.val_idx, small_prepared.val_idx) and refit.norm == small_prepared.norm
    assert len(refit.dataset("train")) == len(small_prepared.train_idx) + len(small_prepared.val_idx)


def test_round_trip_scores_a_submission_and_the_refit_never_sees_a_test_digit(tmp_path, mnist_raw):
    folder = tmp_path / "kaggle"
    env = dict(os.environ, MNIST_DATA_DIR=str(mnist_raw))
    done = subprocess.run([sys.executable, "-m", "helpers.submit", "--refit", "--smoke", "--folder", str(folder)],
                          cwd=paths.ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    record = json.loads((folder / "kaggle.json").read_text())
    test_images, test_labels = data.load_mnist("test", data_dir=mnist_raw, progress=False)
    lines = (folder / "submission.csv").read_text().splitlines()
    assert lines[0] == "ImageId,Label" and len(lines) == len(test_images) + 1
    assert [int(line.split(",")[0]) for line in lines[1:]] == list(range(1, len(test_images) + 1))
    pipeline = record["pipeline"]
    assert pipeline["n"] == len(test_labels) and pipeline["correct"] == round(pipeline["accuracy"] * pipeline["n"])
    # 07 scored the same ensemble on the same digits from the IDX archive: at most a float tie apart
    assert abs(pipeline["accuracy"] - record["ensemble_test_accuracy_07"]) <= 1 / len(test_labels)
    # What the pipeline and the refit trained on is every row 01 kept of train.csv, and no test digit.
    prepared = data.load_prepared(folder / "run" / "data" / "prepared.pt")
    assert record["refit"]["training_digits"] == len(prepared.images)
    train_images, _ = kaggle.read_digits_csv(folder / "train.csv")
    from_train = {bytes(im.numpy()) for im in train_images}
    assert all(bytes(im.numpy()) in from_train for im in prepared.images)
    assert not {bytes(im.numpy()) for im in prepared.images} & {bytes(im.numpy()) for im in test_images}
    assert record["refit"]["score"]["n"] == len(test_labels) and (folder / "submission_refit.csv").is_file()
