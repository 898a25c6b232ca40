"""The final model: candidate recipes, their comparison on the validation set, and the seeds.

A recipe is everything that makes a final model: width and depth, epochs, augmentation, and the
optimizer settings every recipe shares (SGD with Nesterov momentum, one-cycle, label smoothing,
weight decay, batch 128). `compare` trains each candidate with several seeds and ranks them by
their mean validation accuracy; it is slow (minutes per recipe), so it runs on its own
(`make compare-recipes`, results committed in figures/full/06_recipes.json) and notebook 06
reads it, trains only the chosen recipe, and its twin without augmentation for the ablation.
Nothing here touches the test set.

    python -m helpers.final compare [--seeds 0 1 2] [--recipes NAME ...] [--workers 2]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from . import data, paths, store, train as T
from .model import MLP

# What every recipe shares. Batch 128 keeps a step's matrices big enough to use both cores.
COMMON = dict(batch_size=128, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4, label_smoothing=0.1,
              schedule="onecycle")
ELASTIC = dict(rotate=10.0, scale=0.1, shift=2.0, elastic=2.0)
RECIPES = {
    "512-256, 20 epochs, no augmentation": dict(hidden=[512, 256], epochs=20, augment=None),
    "512-256, 20 epochs, shifts": dict(hidden=[512, 256], epochs=20, augment={"shift": 2}),
    "512-256, 20 epochs, affine + elastic": dict(hidden=[512, 256], epochs=20, augment=ELASTIC),
    "512-256, 30 epochs, affine + elastic": dict(hidden=[512, 256], epochs=30, augment=ELASTIC),
    "512-256, 30 epochs, affine + elastic, batch 256": dict(hidden=[512, 256], epochs=30, augment=ELASTIC,
                                                            batch_size=256, lr=0.2),
}
MAX_SECONDS = 90   # machine seconds per seed: a recipe that costs more is not eligible


def settings(recipe: dict | str) -> dict:
    """A recipe (by name or as a dict) with the shared settings filled in."""
    r = RECIPES[recipe] if isinstance(recipe, str) else recipe
    return {**COMMON, "dropout": [0.2] * len(r["hidden"]), **r}


def without_augmentation(recipe: dict | str) -> dict:
    return {**settings(recipe), "augment": None}


def augmenter(spec: dict | None, norm: data.Normalization):
    if not spec:
        return None
    if set(spec) == {"shift"}:
        return data.RandomShift(int(spec["shift"]), norm)
    return data.RandomAffine(norm=norm, **spec)


def train(prepared: data.Prepared, recipe: dict | str, seed: int, checkpoint: str | os.PathLike | None = None,
          progress: bool | None = None, log=print) -> tuple[MLP, list[dict], float]:
    """One seed of a recipe on the training split: (model, history, seconds)."""
    s = settings(recipe)
    T.seed_everything(seed)  # augmentation draws from torch's global generator
    model = MLP(s["hidden"], s["dropout"], label_smoothing=s["label_smoothing"], lr=s["lr"],
                momentum=s["momentum"], weight_decay=s["weight_decay"], nesterov=s["nesterov"],
                seed=seed).to(T.default_device())
    train_loader, val_loader = prepared.loaders(s["batch_size"], seed)
    start = time.perf_counter()
    history = T.fit(model, train_loader, val_loader, s["epochs"], schedule=s["schedule"], norm=prepared.norm,
                    augment=augmenter(s["augment"], prepared.norm), checkpoint=checkpoint, progress=progress,
                    log=log)
    return model, history, time.perf_counter() - start


def _job(job: dict) -> dict:
    """One (recipe, seed) in a worker process with one torch thread; saves its checkpoint if asked."""
    from .model import save_checkpoint

    torch.set_num_threads(1)
    prepared = data.load_prepared()
    model, history, seconds = train(prepared, job["settings"], job["seed"], progress=False, log=lambda s: None)
    if job.get("checkpoint"):
        save_checkpoint(job["checkpoint"], model, prepared.norm, recipe=job["settings"], seed=job["seed"],
                        val_acc=history[-1]["val_acc"], data=prepared.parameters)
    return {**job, "val_acc": history[-1]["val_acc"], "seconds": seconds, "history": history}


def run_jobs(jobs: list[dict], workers: int = 2, log=print) -> list[dict]:
    """Train jobs {"name", "settings", "seed"[, "checkpoint"]} in `workers` processes, one core each.

    Two small models side by side, one thread each, train ~1.6x more digits per second on these
    2-core machines than one after another on two threads (the non-matrix part of a step does
    not split over threads). Returns the jobs in order, each with its history, final validation
    accuracy and `seconds` (wall time on its core); `machine_seconds` is what a job costs the
    machine: its seconds divided by the jobs running at once.
    """
    import multiprocessing

    # spawn, not fork: a Jupyter kernel has threads that a forked child must not inherit
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_job, job) for job in jobs]
        results = []
        for future in futures:
            r = future.result()
            r["machine_seconds"] = r["seconds"] / min(workers, len(jobs))
            log(f"{r['name']} seed {r['seed']}: validation {r['val_acc']:.2%} after {len(r['history'])} epochs, "
                f"{r['seconds']:.0f} s on one core ({r['machine_seconds']:.0f} s of the machine)")
            results.append(r)
    return results


def compare(names: list[str], seeds: list[int], workers: int = 2, log=print) -> list[dict]:
    """Train every (recipe, seed); one row per recipe: validation mean +- std over seeds, cost per seed."""
    results = run_jobs([{"name": n, "settings": settings(n), "seed": s} for n in names for s in seeds], workers, log)
    rows = []
    for name in names:
        mine = [r for r in results if r["name"] == name]
        accs = np.array([r["val_acc"] for r in mine])
        curves = np.array([[h["val_acc"] for h in r["history"]] for r in mine])
        rows.append({"recipe": name, **settings(name), "seeds": [r["seed"] for r in mine], "val_acc": accs.tolist(),
                     "val_acc_mean": float(accs.mean()), "val_acc_std": float(accs.std(ddof=1)) if len(accs) > 1 else None,
                     "n_seeds": len(accs), "seconds_per_seed": float(np.mean([r["seconds"] for r in mine])),
                     "machine_seconds_per_seed": float(np.mean([r["machine_seconds"] for r in mine])),
                     "curve_mean": curves.mean(0).tolist()})
    return rows


def choose(rows: list[dict], max_seconds: float = MAX_SECONDS) -> dict:
    """The best recipe by mean validation accuracy among those whose seed costs <= `max_seconds`
    of the machine (`machine_seconds_per_seed`)."""
    eligible = [r for r in rows if r["machine_seconds_per_seed"] <= max_seconds] or rows
    return max(eligible, key=lambda r: r["val_acc_mean"])


def shown(comparison: dict):
    """The committed comparison as a table: recipe, validation mean +- std, cost per seed, chosen."""
    import pandas as pd

    rows = [{"recipe": r["recipe"],
             "validation accuracy (%)": f"{100 * r['val_acc_mean']:.2f} ± {100 * (r['val_acc_std'] or 0):.2f}",
             "seeds": r["n_seeds"], "seconds per seed (one core)": round(r["seconds_per_seed"]),
             "machine seconds per seed": round(r["machine_seconds_per_seed"]),
             "chosen": "←" if r["recipe"] == comparison["chosen"] else ""} for r in comparison["rows"]]
    return pd.DataFrame(rows).style.hide(axis="index")


def summarize(runs: list[dict]) -> dict:
    """Validation accuracy of the final seeds and of the ablation: mean +- std, cost per seed."""
    out, lines = {}, []
    for kind, label in (("seed", "final model"), ("ablation", "without augmentation")):
        mine = [r for r in runs if r["kind"] == kind]
        if not mine:
            continue
        accs = np.array([r["val_acc"] for r in mine])
        std = float(accs.std(ddof=1)) if len(accs) > 1 else None
        out[kind] = {"seeds": [r["seed"] for r in mine], "val_acc": accs.tolist(), "val_acc_mean": float(accs.mean()),
                     "val_acc_std": std, "n_seeds": len(accs), "seconds": [r["seconds"] for r in mine],
                     "machine_seconds": [r["machine_seconds"] for r in mine]}
        lines.append(f"{label}: validation {100 * accs.mean():.2f}%" + (f" ± {100 * std:.2f}" if std is not None else "")
                     + f" ({len(accs)} seed{'s' if len(accs) > 1 else ''}; {max(out[kind]['machine_seconds']):.0f} s "
                     f"of the machine per seed at most)")
    return {"text": "\n".join(lines), "record": {"final": out.get("seed"), "ablation": out.get("ablation")}}


def results_path() -> Path:
    return paths.figures_dir() / "full" / "06_recipes.json"


def load_comparison() -> dict | None:
    path = results_path()
    return json.loads(path.read_text()) if path.exists() else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    cmp_ = sub.add_parser("compare", help="train the candidate recipes on the training split, rank on validation")
    cmp_.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES), metavar="NAME")
    cmp_.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    cmp_.add_argument("--workers", type=int, default=2, help="processes, one core each (default 2)")
    args = parser.parse_args(argv)
    prepared = data.load_prepared()
    start = time.perf_counter()
    rows = compare(args.recipes, args.seeds, args.workers)
    chosen = choose(rows)
    for row in rows:
        print(f"{row['recipe']}: {row['val_acc_mean']:.2%} +- {100 * (row['val_acc_std'] or 0):.2f} "
              f"({row['n_seeds']} seeds, {row['machine_seconds_per_seed']:.0f} s of the machine per seed)")
    record = store.result_record({"recipes": args.recipes, "seeds": args.seeds, "workers": args.workers,
                                  "common": COMMON, "max_seconds_per_seed": MAX_SECONDS, "data": prepared.parameters},
                                 None, rows=rows, chosen=chosen["recipe"], seconds=time.perf_counter() - start)
    path = store.save_json(results_path(), record)
    print(f"chosen: {chosen['recipe']} -> {paths.show(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())


def build(prepared: data.Prepared, recipe: str, chosen: dict, seeds: list[int], ablation_seeds: list[int],
          workers: int, log=print) -> dict:
    """Train the final model: `seeds` of the chosen recipe and `ablation_seeds` of it without
    augmentation, in `workers` processes; save each to data/final/, the seeds as one ensemble in
    data/model.pt, and the record in figures/06_grid_search_final.json. Returns the runs, the
    summary and the paths."""
    from .model import Ensemble, load_checkpoint, save_checkpoint

    folder = paths.data_dir() / "final"
    jobs = [{"name": recipe, "kind": "seed", "settings": chosen, "seed": s, "checkpoint": folder / f"seed{s}.pt"}
            for s in seeds]
    jobs += [{"name": "ablation (no augmentation)", "kind": "ablation", "settings": without_augmentation(chosen),
              "seed": s, "checkpoint": folder / f"ablation_seed{s}.pt"} for s in ablation_seeds]
    start = time.perf_counter()
    runs = run_jobs(jobs, workers, log)
    seconds = time.perf_counter() - start
    members = [load_checkpoint(folder / f"seed{s}.pt")[0] for s in seeds]
    model_path = save_checkpoint(paths.data_dir() / "model.pt", Ensemble(members), prepared.norm, recipe=chosen,
                                 seeds=list(seeds), data=prepared.parameters,
                                 ablation=[f"final/ablation_seed{s}.pt" for s in ablation_seeds])
    summary = summarize(runs)
    record = store.result_record(
        {"recipe": recipe, "settings": chosen, "final_seeds": list(seeds), "ablation_seeds": list(ablation_seeds),
         "workers": workers, "data": prepared.parameters}, None, **summary["record"], seconds=seconds,
        histories={f"{r['kind']}{r['seed']}": r["history"] for r in runs}, checkpoint=paths.show(model_path))
    json_path = store.save_json(paths.figures_dir() / "06_grid_search_final.json", record)
    return {"runs": runs, "summary": summary, "seconds": seconds, "model": model_path, "record": json_path}
