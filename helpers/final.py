"""The final model: candidate recipes, their comparison on the validation set, and the seeds.

A recipe is everything that makes a final model: width and depth, epochs, augmentation, and the
optimizer settings every recipe shares (SGD with Nesterov momentum, one-cycle, label smoothing,
weight decay, batch 128). `compare` trains each candidate with several seeds and ranks them by
their mean validation accuracy; it is slow (minutes per recipe), so it runs on its own
(`make compare-recipes`, results committed in figures/full/06_recipes.json) and notebook 06
reads it, trains only the chosen recipe, and its twin without augmentation for the ablation.
Which recipe is chosen is a rule on the recipes' own settings and validation means (`choose`),
so it is the same on every machine; the seconds are recorded beside it as information.
Nothing here touches the test set.

    python -m helpers.final compare [--seeds 0 1 2] [--recipes NAME ...] [--workers 2]
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import re
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import data, params as P, paths, store, train as T
from .model import MLP, Ensemble, load_checkpoint, save_checkpoint

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
# Beyond the budget, trained only by `make compare-recipes` (`beyond`), their seeds' checkpoints
# committed under figures/full/beyond/ so that 07 tests them beside the final model: a longer,
# wider MLP (the best of these on validation is "the long recipe") and a small convnet, the
# yardstick of what convolutions add. Same shared settings, split and augmentation family.
BEYOND = {
    "1024-1024, 40 epochs, affine + elastic": dict(hidden=[1024, 1024], epochs=40, augment=ELASTIC),
    "convnet 16-32, 15 epochs, affine + elastic": dict(conv=[16, 32], hidden=[], epochs=15, augment=ELASTIC),
}
# The most a seed may train, as a recipe: a candidate that costs more compute (see `compute`) is
# not eligible. It admits every candidate above; a wider or longer one needs this line raised.
BUDGET = dict(hidden=[512, 256], epochs=30)
# A difference between the final model and its ablation is called clear below this p-value
# (Welch's t over seeds: with a few seeds a fixed number of standard errors is too lenient).
SIGNIFICANCE = 0.05


def settings(recipe: dict | str) -> dict:
    """A recipe (by name or as a dict) with the shared settings filled in."""
    r = {**RECIPES, **BEYOND}[recipe] if isinstance(recipe, str) else recipe
    return {**COMMON, "dropout": [0.2] * len(r["hidden"]), **r}


def without_augmentation(recipe: dict | str) -> dict:
    return {**settings(recipe), "augment": None}


def augmenter(spec: dict | None, norm: data.Normalization):
    if not spec:
        return None
    if set(spec) == {"shift"}:
        return data.RandomShift(int(spec["shift"]), norm)
    return data.RandomAffine(norm=norm, **spec)


def augmented_examples(images: torch.Tensor, spec: dict | None, norm: data.Normalization, versions: int = 3,
                       seed: int = 0) -> tuple[list[torch.Tensor], list[str]]:
    """What training shows of `images` (uint8 [N, 28, 28]) under the recipe's augmentation `spec`:
    each of its parts alone, then `versions` draws of all of it, through the augmenters that train
    (normalized in, back to uint8 out). Drawn from a private copy of torch's generator."""
    if not spec:
        return [], []
    parts = {"shift": "shift", "rotate": "rotation", "scale": "scale", "elastic": "elastic warp"}
    alone = [({**{k: 0.0 for k in parts}, k: v}, parts[k]) for k, v in spec.items() if v and len(spec) > 1]
    whole = [(spec, f"all of it ({i + 1})") for i in range(versions)]
    x = data.normalize(images, norm)
    out, names = [], []
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for s, name in alone + whole:
            y = augmenter(s, norm)(x.clone())
            out.append(((y * norm.std + norm.mean) * 255).round().clamp(0, 255).to(torch.uint8).view(-1, 28, 28))
            names.append(name)
    return out, names


def train(prepared: data.Prepared, recipe: dict | str, seed: int, progress: bool | None = None,
          log=print) -> tuple[MLP, list[dict], float]:
    """One seed of a recipe on the training split: (model, history, seconds)."""
    s = settings(recipe)
    T.seed_everything(seed)  # augmentation draws from torch's global generator
    model = MLP.from_settings(s, seed=seed).to(T.default_device())
    train_loader, val_loader = prepared.loaders(s["batch_size"], seed)
    start = time.perf_counter()
    history = T.fit(model, train_loader, val_loader, s["epochs"], schedule=s["schedule"], norm=prepared.norm,
                    augment=augmenter(s["augment"], prepared.norm), progress=progress, log=log)
    return model, history, time.perf_counter() - start


def _job(job: dict) -> dict:
    """One (recipe, seed) in a worker process with one torch thread; saves its checkpoint if asked."""
    torch.set_num_threads(1)
    prepared = data.load_prepared()
    if job.get("refit"):
        prepared = prepared.with_validation_in_training()
    model, history, seconds = train(prepared, job["settings"], job["seed"], progress=False, log=lambda s: None)
    if job.get("checkpoint"):
        save_checkpoint(job["checkpoint"], model, prepared.norm, recipe=job["settings"], seed=job["seed"],
                        val_acc=history[-1]["val_acc"], data=prepared.parameters)
    return {**job, "val_acc": history[-1]["val_acc"], "seconds": seconds, "history": history}


def run_jobs(jobs: list[dict], workers: int = 2, log=print) -> list[dict]:
    """Train jobs {"name", "settings", "seed"[, "checkpoint", "refit"]} (refit: on training +
    validation, `Prepared.with_validation_in_training`) in `workers` processes, one core each.

    Two small models side by side, one thread each, train ~1.6x more digits per second on these
    2-core machines than one after another on two threads (the non-matrix part of a step does
    not split over threads). Returns the jobs in order, each with its history, final validation
    accuracy and `seconds` (wall time on its core); `machine_seconds` is what a job costs the
    machine: its seconds divided by the jobs running at once.
    """
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


def spread(accs) -> dict:
    """Per-seed validation accuracies as the record keeps them: the values, mean, sample std (None
    for one seed) and count."""
    accs = np.asarray(accs, dtype=float)
    return {"val_acc": accs.tolist(), "val_acc_mean": float(accs.mean()),
            "val_acc_std": float(accs.std(ddof=1)) if len(accs) > 1 else None, "n_seeds": len(accs)}


def percent(summary: dict) -> str:
    """`spread`'s mean +- std in percent, e.g. "99.12 ± 0.02 %" ("99.12 %" for one seed)."""
    std = summary["val_acc_std"]
    return f"{100 * summary['val_acc_mean']:.2f}" + (f" ± {100 * std:.2f}" if std is not None else "") + " %"


def compare(names: list[str], seeds: list[int], workers: int = 2, log=print) -> list[dict]:
    """Train every (recipe, seed); one row per recipe: validation mean +- std over seeds, cost per seed."""
    return _rows(names, run_jobs([{"name": n, "settings": settings(n), "seed": s} for n in names for s in seeds],
                                 workers, log))


def _rows(names: list[str], results: list[dict], lists: dict[str, str] | None = None) -> list[dict]:
    """One row per recipe from its seeds' results; `lists`: result key -> row key of its per-seed list."""
    rows = []
    for name in names:
        mine = [r for r in results if r["name"] == name]
        curves = np.array([[h["val_acc"] for h in r["history"]] for r in mine])
        rows.append({"recipe": name, **settings(name), "seeds": [r["seed"] for r in mine],
                     **spread([r["val_acc"] for r in mine]),
                     "seconds_per_seed": float(np.mean([r["seconds"] for r in mine])),
                     "machine_seconds_per_seed": float(np.mean([r["machine_seconds"] for r in mine])),
                     "curve_mean": curves.mean(0).tolist(),
                     **{key: [r[k] for r in mine] for k, key in (lists or {}).items()}})
    return rows


def beyond(prepared: data.Prepared, names: list[str], seeds: list[int], workers: int = 2, log=print) -> list[dict]:
    """Train the BEYOND recipes' seeds as `compare` does, and keep each seed's checkpoint under
    figures/full/beyond/ in half precision (a quarter of the bytes in git). The rows add the
    checkpoints and the validation accuracy of the weights as stored, which is the model 07 tests."""
    folder = beyond_folder()
    val_x, val_y = data.normalize(prepared.images[prepared.val_idx], prepared.norm), prepared.labels[prepared.val_idx]
    with tempfile.TemporaryDirectory() as tmp:
        jobs = [{"name": n, "settings": settings(n), "seed": s, "checkpoint": Path(tmp) / f"{_slug(n)}_seed{s}.pt"}
                for n in names for s in seeds]
        results = run_jobs(jobs, workers, log)
        for r in results:
            model, norm, blob = load_checkpoint(r["checkpoint"])
            stored = save_checkpoint(folder / r["checkpoint"].name, model.half(), norm, **blob["meta"])
            r["checkpoint"] = stored.name
            r["stored_val_acc"] = (load_checkpoint(stored)[0].predict(val_x) == val_y).float().mean().item()
    return _rows(names, results, {"checkpoint": "checkpoints", "stored_val_acc": "stored_val_acc"})


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def beyond_folder() -> Path:
    return paths.figures_dir() / "full" / "beyond"


def long_recipe(rows: list[dict]) -> dict:
    """The long recipe: the best MLP (no `conv`) of `beyond`'s rows by mean validation accuracy."""
    return max((r for r in rows if not r.get("conv")), key=lambda r: r["val_acc_mean"])


def compute(recipe: dict | str) -> int:
    """A seed's training compute in recipe terms: the multiply-adds of one digit's forward pass
    (the weight matrices' sizes, from `hidden`) times the epochs.

    The backward pass costs about twice the forward, on the same training digits for every
    recipe, so what a seed costs any machine is proportional to this number, which depends on
    no machine. The batch size does not enter: it changes the steps, not the multiply-adds.
    """
    s = settings(recipe)
    conv, side, channels = s.get("conv", []), 28, 1
    macs = 0
    for c in conv:  # a 5x5 convolution at every pixel of its input, then a 2x2 pool
        macs += side * side * c * channels * 25
        side, channels = side // 2, c
    widths = [channels * side * side, *s["hidden"], 10]
    return s["epochs"] * (macs + sum(a * b for a, b in zip(widths, widths[1:])))


def within_budget(recipe: dict | str) -> bool:
    return compute(recipe) <= compute(BUDGET)


def choose(rows: list[dict]) -> dict:
    """The best recipe by mean validation accuracy among those within BUDGET (`compute`).

    Seconds do not enter: a wall-clock cut-off picks a different recipe on a faster or slower
    machine. Rows carry their settings (`hidden`, `epochs`), as `compare` writes them.
    """
    eligible = [r for r in rows if within_budget(r)]
    if not eligible:
        raise ValueError(f"no recipe within the budget ({rule_text()}): "
                         + ", ".join(r["recipe"] for r in rows))
    return max(eligible, key=lambda r: r["val_acc_mean"])


def rule_text() -> str:
    """The recipe rule in words, built from BUDGET."""
    width = "-".join(map(str, BUDGET["hidden"]))
    return (f"the best mean validation accuracy among the recipes whose seed costs at most the training compute "
            f"of a {width} network for {BUDGET['epochs']} epochs")


def shown(comparison: dict | None):
    """The committed comparison as a table: recipe, validation mean +- std, compute against the
    budget, cost per seed on the machine that ran it, chosen (or a note that there is none)."""
    import pandas as pd
    from IPython.display import Markdown

    if comparison is None:
        return Markdown(f"No committed recipe comparison ({paths.show(results_path())}): run `make compare-recipes`.")

    rows = [{"recipe": r["recipe"], "validation accuracy": percent(r), "seeds": r["n_seeds"],
             "training compute (share of the budget)": f"{compute(r) / compute(BUDGET):.0%}",
             "seconds per seed (one core, that machine)": round(r["seconds_per_seed"]),
             "machine seconds per seed (that machine)": round(r["machine_seconds_per_seed"]),
             "chosen": "←" if r["recipe"] == comparison["chosen"] else ""} for r in comparison["rows"]]
    return pd.DataFrame(rows).style.hide(axis="index")


@dataclass(frozen=True)
class Plan:
    """The final model notebook 06 will train, checked before anything trains."""

    recipe: str                     # a RECIPES name
    settings: dict                  # its settings, `epochs` replaced when final_epochs > 0
    seeds: tuple[int, ...]          # of the final model (an ensemble)
    ablation_seeds: tuple[int, ...]  # of the same recipe without augmentation
    chosen_by: str                  # how the recipe was picked, in words


def plan(comparison: dict | None, *, final_recipe, final_seeds, ablation_seeds, final_epochs) -> Plan:
    """Check 06's final-model parameters; `comparison` is `load_comparison()`.

    final_recipe: "" for the comparison's choice, else a RECIPES name; final_seeds: distinct
    seeds; ablation_seeds: the same, empty for the final seeds (so the ablation has as many);
    final_epochs: 0 for the recipe's own, else the epochs of every model.
    """
    seeds = P.seeds("final_seeds", final_seeds)
    ablation = seeds if ablation_seeds in ([], ()) else P.seeds("ablation_seeds", ablation_seeds)
    epochs = P.integer("final_epochs", final_epochs, minimum=0)
    if final_recipe != "":
        recipe = P.choice("final_recipe", final_recipe, list(RECIPES))
        chosen_by = "set by the parameter `final_recipe`"
        if comparison and comparison["chosen"] != recipe:
            chosen_by += f" (the comparison's rule picks {comparison['chosen']})"
    elif comparison:
        recipe = comparison["chosen"]
        if recipe not in RECIPES:
            raise ValueError(f"the comparison's choice {recipe!r} is no longer a candidate: run make compare-recipes")
        chosen_by = f"chosen by the rule: {rule_text()}, in the committed comparison"
    else:
        recipe = next(iter(RECIPES))
        chosen_by = f"the first candidate, since there is no recipe comparison at {paths.show(results_path())}"
    recipe_settings = settings(recipe)
    if epochs:
        recipe_settings["epochs"] = epochs
    return Plan(recipe, recipe_settings, seeds, ablation, chosen_by)


def summarize(runs: list[dict]) -> dict:
    """Validation accuracy of the final seeds and of the ablation (`spread`), cost per seed."""
    out = {}
    for kind, key in (("seed", "final"), ("ablation", "ablation")):
        mine = [r for r in runs if r["kind"] == kind]
        out[key] = {"seeds": [r["seed"] for r in mine], **spread([r["val_acc"] for r in mine]),
                    "seconds": [r["seconds"] for r in mine], "machine_seconds": [r["machine_seconds"] for r in mine]}
    return out


def build(prepared: data.Prepared, plan: Plan, workers: int, log=print) -> dict:
    """Train the final model: the plan's seeds of its recipe and its ablation seeds without
    augmentation, in `workers` processes; save each to data/final/, the seeds as one ensemble in
    data/model.pt, and the record in figures/06_grid_search_final.json. Returns the plan, the
    runs, the summary (`summarize`), the seconds and the paths."""
    folder = paths.data_dir() / "final"
    jobs = [{"name": plan.recipe, "kind": "seed", "settings": plan.settings, "seed": s,
             "checkpoint": folder / f"seed{s}.pt"} for s in plan.seeds]
    jobs += [{"name": "ablation (no augmentation)", "kind": "ablation", "settings": without_augmentation(plan.settings),
              "seed": s, "checkpoint": folder / f"ablation_seed{s}.pt"} for s in plan.ablation_seeds]
    start = time.perf_counter()
    runs = run_jobs(jobs, workers, log)
    seconds = time.perf_counter() - start
    members = [load_checkpoint(folder / f"seed{s}.pt")[0] for s in plan.seeds]
    model_path = save_checkpoint(paths.data_dir() / "model.pt", Ensemble(members), prepared.norm,
                                 recipe=plan.settings, seeds=list(plan.seeds), data=prepared.parameters,
                                 ablation=[f"final/ablation_seed{s}.pt" for s in plan.ablation_seeds])
    summary = summarize(runs)
    record = store.result_record(
        {"recipe": plan.recipe, "settings": plan.settings, "final_seeds": list(plan.seeds),
         "ablation_seeds": list(plan.ablation_seeds), "chosen_by": plan.chosen_by, "workers": workers,
         "data": prepared.parameters}, None, **summary, seconds=seconds,
        histories={f"{r['kind']}{r['seed']}": r["history"] for r in runs}, checkpoint=paths.show(model_path))
    json_path = store.save_json(paths.figures_dir() / "06_grid_search_final.json", record)
    log(f"{len(runs)} models in {seconds:.0f} s; saved {paths.show(model_path)} and {paths.show(json_path)}")
    return {"plan": plan, "runs": runs, "summary": summary, "seconds": seconds, "model": model_path,
            "record": json_path}


def difference(final: dict, ablation: dict) -> str:
    """The final model against its ablation (two `spread`s), in standard errors of the difference
    of their means; the words ("clearly above", "within noise") follow from the numbers."""
    from scipy import stats

    d = 100 * (final["val_acc_mean"] - ablation["val_acc_mean"])
    if final["n_seeds"] < 2 or ablation["n_seeds"] < 2:
        return f"The difference, {d:+.2f} points, has no standard error: that needs two seeds of each."
    if final["val_acc_std"] == 0 and ablation["val_acc_std"] == 0:
        return f"The seeds of each agree exactly: the difference, {d:+.2f} points, has no noise to weigh it against."
    # Welch's t is the difference over its standard error: each mean's seed-to-seed spread over
    # the root of its seeds, the two combined in quadrature; no equal-variance assumption.
    # With a few seeds, t has few degrees of freedom: the words follow its p-value, not a fixed t.
    t = stats.ttest_ind(final["val_acc"], ablation["val_acc"], equal_var=False)
    clear = t.pvalue < SIGNIFICANCE
    words = ("clearly above" if clear and t.statistic > 0 else "clearly below" if clear else "within noise of")
    return (f"With augmentation the model is {words} its twin without: {d:+.2f} points, "
            f"{abs(t.statistic):.1f} standard errors of the difference (the seeds' spread of each mean, combined), "
            f"Welch's two-sample t-test over seeds p = {t.pvalue:.2g} (below {SIGNIFICANCE:g} is called clear).")


def conclusion(built: dict, comparison: dict | None) -> str:
    """The final-model half of 06, in Markdown, from `build`'s result and `load_comparison()`."""
    plan, final, ablation = built["plan"], built["summary"]["final"], built["summary"]["ablation"]
    own = settings(plan.recipe)["epochs"]
    epochs = "" if plan.settings["epochs"] == own else \
        f" Every model trained {plan.settings['epochs']} epochs (`final_epochs`), not the recipe's {own}."
    row = next((r for r in comparison["rows"] if r["recipe"] == plan.recipe), None) if comparison else None
    measured = f" (the comparison measured {percent(row)} over {row['n_seeds']} seeds)" if row and not epochs else ""
    plural = lambda n: f"{n} seed{'s' if n != 1 else ''}"  # noqa: E731
    text = [f"**The recipe.** {plan.recipe}, {plan.chosen_by}.{epochs}",
            f"**Validation.** The final model's {plural(final['n_seeds'])} reach {percent(final)}{measured}; "
            f"the same recipe without augmentation, {plural(ablation['n_seeds'])}, {percent(ablation)}. "
            + difference(final, ablation)]
    text.append(f"**Cost on this run.** A seed of the final model took {np.mean(final['seconds']):.0f} s on one core "
                f"({np.mean(final['machine_seconds']):.0f} s of the machine, sharing it with the models trained "
                f"beside it), one without augmentation {np.mean(ablation['seconds']):.0f} s "
                f"({np.mean(ablation['machine_seconds']):.0f} s). These seconds depend on the machine and its load; "
                f"no rule here uses them.")
    return "\n\n".join(text)


def results_path() -> Path:
    return paths.figures_dir() / "full" / "06_recipes.json"


def beyond_path() -> Path:
    return paths.figures_dir() / "full" / "06_beyond.json"


def load_comparison() -> dict | None:
    """The committed recipe comparison, its `chosen` recomputed by `choose` (today's rule).

    The file may have been written under another rule (until now a wall-clock cut-off of the
    machine that ran it). The rule reads only what every row keeps, its settings and validation
    mean, so it is applied here rather than by training the comparison again (15+ minutes).
    """
    path = results_path()
    if not path.exists():
        return None
    comparison = json.loads(path.read_text())
    return {**comparison, "chosen": choose(comparison["rows"])["recipe"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    cmp_ = sub.add_parser("compare", help="train the candidate recipes on the training split, rank on validation")
    cmp_.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES), metavar="NAME")
    far = sub.add_parser("beyond", help="train the recipes beyond the budget (a long MLP, a convnet), keep their "
                                        "checkpoints for 07 -> figures/full/06_beyond.json")
    for command in (cmp_, far):
        command.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
        command.add_argument("--workers", type=int, default=2, help="processes, one core each (default 2)")
    args = parser.parse_args(argv)
    prepared = data.load_prepared()
    start = time.perf_counter()
    if args.command == "beyond":
        rows = beyond(prepared, list(BEYOND), args.seeds, args.workers)
        for row in rows:
            print(f"{row['recipe']}: {percent(row)} ({row['n_seeds']} seeds, {row['machine_seconds_per_seed']:.0f} s "
                  f"of the machine per seed)")
        record = store.result_record({"recipes": BEYOND, "seeds": args.seeds, "workers": args.workers,
                                      "common": COMMON, "data": prepared.parameters}, None, rows=rows,
                                     long=long_recipe(rows)["recipe"], seconds=time.perf_counter() - start)
        print(f"long recipe: {record['long']} -> {paths.show(store.save_json(beyond_path(), record))}")
        return 0
    rows = compare(args.recipes, args.seeds, args.workers)
    chosen = choose(rows)
    for row in rows:
        print(f"{row['recipe']}: {percent(row)} ({row['n_seeds']} seeds, {compute(row) / compute(BUDGET):.0%} of the "
              f"budget, {row['machine_seconds_per_seed']:.0f} s of the machine per seed)")
    record = store.result_record({"recipes": args.recipes, "seeds": args.seeds, "workers": args.workers,
                                  "common": COMMON, "budget": BUDGET, "data": prepared.parameters},
                                 None, rows=rows, chosen=chosen["recipe"], seconds=time.perf_counter() - start)
    path = store.save_json(results_path(), record)
    print(f"chosen: {chosen['recipe']} -> {paths.show(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
