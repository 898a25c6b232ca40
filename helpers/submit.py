"""The Kaggle round trip: MNIST as the competition's files, the notebooks on them, a scored submission.

    python -m helpers.submit [--refit] [--folder data/kaggle] [--smoke]   # make kaggle: --refit

MNIST's 60,000 training digits become `train.csv` (`label`, pixel0..pixel783) and its 10,000 test
digits `test.csv` (pixels only); the test labels are held back in this process's memory and never
written where a notebook could read them. Notebooks 01 -> 07 then run with papermill as an
entrant would run them (01 with `source=train.csv`, 07 with `kaggle_test_csv=test.csv`), into
the folder's own data/ and figures/ (the checkout's stay as they are), and 07's `submission.csv`
is scored against the held-back labels. `--refit` then trains 06's chosen recipe, with 06's
seeds, again on training + validation together, as entrants do before submitting, and scores
that ensemble's submission too. The record goes to figures/kaggle.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from . import data, evaluate as E, final, kaggle, notebooks, paths, store


def export(folder: Path, train_images: torch.Tensor, train_labels: torch.Tensor,
           test_images: torch.Tensor) -> tuple[Path, Path]:
    """Write `train.csv` (label first, as Kaggle's) and `test.csv` (no label) into `folder`, atomically."""
    out = []
    for name, frame in (("train.csv", kaggle.to_frame(train_images, train_labels)), ("test.csv", kaggle.to_frame(test_images))):
        with store.atomic_path(folder / name) as tmp:
            frame.to_csv(tmp, index=False)
        out.append(folder / name)
    return out[0], out[1]


def score(submission: Path, labels: torch.Tensor) -> dict:
    """A submission (checked by `kaggle.read_submission`) against the held-back labels."""
    predicted = kaggle.read_submission(submission)
    if len(predicted) != len(labels):
        raise kaggle.CsvFormatError(f"{submission}: {len(predicted)} predictions for {len(labels)} test images")
    correct = int((predicted == labels).sum())
    return {"submission": paths.show(submission), "correct": correct, "n": len(labels),
            "accuracy": correct / len(labels), "wilson": E.wilson(correct, len(labels))}


def refit(work: Path, test_images: torch.Tensor, submission: Path, workers: int = 2, log=print) -> dict:
    """06's chosen recipe and seeds (from the run's own record) trained on training + validation,
    their ensemble's predictions for `test_images` written to `submission`."""
    from .model import Ensemble, load_checkpoint

    chosen = json.loads((work / "figures" / "06_grid_search_final.json").read_text())["parameters"]
    prepared = data.load_prepared().with_validation_in_training()
    jobs = [{"name": "refit on training + validation", "settings": chosen["settings"], "seed": s, "refit": True,
             "checkpoint": work / "data" / "refit" / f"seed{s}.pt"} for s in chosen["final_seeds"]]
    start = time.perf_counter()
    runs = final.run_jobs(jobs, workers, log)
    seconds = time.perf_counter() - start
    ensemble = Ensemble([load_checkpoint(j["checkpoint"])[0] for j in jobs])
    kaggle.write_submission(submission, E.predict_all(ensemble, test_images, prepared.norm).argmax(1))
    return {"recipe": chosen["recipe"], "seeds": chosen["final_seeds"], "training_digits": len(prepared.train_idx),
            "seconds": seconds, "seconds_per_seed": [r["seconds"] for r in runs]}


def round_trip(folder: Path, with_refit: bool, record_path: Path, parameters: dict | None = None,
               log=print) -> dict:
    """The whole round trip into `folder`; `parameters` per notebook (default: the notebooks' own,
    as `make reproduce`). Returns the record, also saved at `record_path`. The notebooks' data and
    figures go to `folder`/run/ from here on, for this process too."""
    start = time.perf_counter()
    train_images, train_labels = data.load_mnist("train")
    test_images, held_back = data.load_mnist("test")
    train_csv, test_csv = export(folder, train_images, train_labels, test_images)
    work = folder / "run"
    notebooks.private_folders(work)
    asked = {name: dict((parameters or {}).get(name, {})) for name in notebooks.ORDER}
    asked["01_data"]["source"] = str(train_csv)
    asked["07_test_eval"] |= {"kaggle_test_csv": str(test_csv), "submission": str(folder / "submission.csv")}
    seconds = {}
    for name in notebooks.ORDER:
        seconds[name] = notebooks.execute(name, work / "notebooks" / f"{name}.ipynb", asked[name])
        log(f"{name}: {seconds[name]:.1f} s")
    results = {"pipeline": score(folder / "submission.csv", held_back), "notebook_seconds": seconds,
               # 07 scored the same ensemble on MNIST's test labels: the two must agree
               "ensemble_test_accuracy_07": json.loads((work / "figures" / "07_test_eval.json").read_text())
               ["ensemble_test_accuracy"]}
    if with_refit:
        # the entrant's own copy of test.csv, read back through the same reader as 01's
        kaggle_images, _ = kaggle.read_digits_csv(test_csv)
        results["refit"] = refit(work, kaggle_images, folder / "submission_refit.csv", log=log)
        results["refit"] |= {"score": score(folder / "submission_refit.csv", held_back)}
    # the record keeps the parameters asked for beyond the files, which are the folder's own
    record = store.result_record({"folder": paths.show(folder), "refit": with_refit, "notebooks": parameters or {},
                                  "train_rows": len(train_images), "test_rows": len(test_images)},
                                 None, **results, seconds=time.perf_counter() - start)
    store.save_json(record_path, record)
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--refit", action="store_true", help="also refit the chosen recipe on training + validation")
    parser.add_argument("--folder", type=Path, default=paths.data_dir() / "kaggle")
    parser.add_argument("--smoke", action="store_true", help="the smoke run's small parameters; the record goes "
                                                             "into the folder, not figures/")
    args = parser.parse_args(argv)
    folder = args.folder.resolve()
    # the checkout's figures/, fixed before the run's own folders take over
    record_path = folder / "kaggle.json" if args.smoke else paths.figures_dir() / "kaggle.json"
    record = round_trip(folder, args.refit, record_path, notebooks.SMOKE_PARAMETERS if args.smoke else None)
    for key, s in [("pipeline", record["pipeline"])] + ([("refit", record["refit"]["score"])] if args.refit else []):
        print(f"{key}: {s['accuracy']:.2%} of {s['n']} held-back test labels ({s['submission']})")
    print(f"round trip: {record['seconds']:.0f} s -> {paths.show(record_path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
