"""Test-set evaluation: accuracies with their intervals, paired tests, per-class report, confusion,
mistakes, rendered and photographed digits, and the sentences that report them.

Two kinds of uncertainty are kept apart throughout. The spread over seeds says how much training
with another seed moves an accuracy. The Wilson interval says how far the test digits, a sample
of all digits like them, may put an accuracy from the one on all such digits; seeds evaluated on
the same digits share that error, so it does not shrink with more seeds. Two models evaluated on
the same digits are compared digit by digit (exact McNemar): only the digits one gets right and
the other misses carry information about which is better.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from scipy import stats

from . import data, kaggle, params as P, paths
from .model import MLP, Ensemble, load_checkpoint

CONFIDENCE = 0.95    # of every interval here
SIGNIFICANCE = 0.05  # a paired difference with a smaller p-value is called more than sampling noise


def check_parameters(*, checkpoint: str, kaggle_test_csv: str, submission: str, rendered_digits: int,
                     photo_digits: int, seed: int) -> SimpleNamespace:
    """07's parameters, checked before anything runs, read by name (paths as Path); `record` is
    what its saved result shows of them (paths relative to the repository)."""
    from .predict import default_checkpoint

    kaggle_test_csv = str(kaggle_test_csv)
    if kaggle_test_csv and not Path(kaggle_test_csv).is_file():
        raise FileNotFoundError(f"parameter 'kaggle_test_csv': no such file: {kaggle_test_csv}")
    run = SimpleNamespace(
        checkpoint=Path(checkpoint) if checkpoint else default_checkpoint(), kaggle_test_csv=kaggle_test_csv,
        submission=Path(submission) if submission else paths.data_dir() / "submission.csv",
        rendered_digits=P.integer("rendered_digits", rendered_digits, minimum=0, maximum=10000),
        photo_digits=P.integer("photo_digits", photo_digits, minimum=0, maximum=10000),
        seed=P.integer("seed", seed, minimum=0))
    run.record = {k: paths.show(v) if isinstance(v, Path) else v for k, v in vars(run).items()}
    return run


def wilson(k: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The Wilson score interval (no continuity correction) for `k` successes out of `n`."""
    ci = stats.binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def mcnemar(correct_a, correct_b) -> dict:
    """Exact McNemar test of two models' per-digit correctness on the same digits (boolean, same length).

    `a_only`: digits A gets right and B misses; `b_only` the reverse. Under "equally good" each
    such digit is a fair coin, so the two-sided p-value is the binomial test of `b_only` out of
    `a_only + b_only` at 1/2 (1 when no digit separates them).
    """
    a, b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"paired correctness of different shapes: {a.shape} and {b.shape}")
    a_only, b_only = int((a & ~b).sum()), int((~a & b).sum())
    p = stats.binomtest(b_only, a_only + b_only, 0.5).pvalue if a_only + b_only else 1.0
    return {"a_only": a_only, "b_only": b_only, "p_value": float(p)}


def sample(n_total: int, n: int | None, seed: int) -> torch.Tensor:
    """`n` of the indices `0..n_total-1` drawn at random without replacement, in increasing order
    (all of them when `n` is None or not smaller than `n_total`)."""
    if n is None or n >= n_total:
        return torch.arange(n_total)
    return torch.from_numpy(np.sort(np.random.default_rng(seed).choice(n_total, n, replace=False)))


@torch.no_grad()
def predict_all(model: MLP, images: torch.Tensor, norm: data.Normalization) -> torch.Tensor:
    """Class probabilities `[N, 10]` for uint8 images `[N, 28, 28]`, through the one normalization."""
    device = next(model.parameters()).device
    loader = data.make_loader(data.DigitsDataset(images, None, norm), 4096)
    return torch.cat([model.predict_proba(x.to(device)).cpu() for x in loader])


def metrics(probs: torch.Tensor, labels: torch.Tensor) -> dict:
    """Cross-entropy loss (the model's own, unsmoothed), accuracy and its Wilson interval."""
    nll = -torch.log(probs.clamp_min(1e-12))[torch.arange(len(labels)), labels]
    k, n = int((probs.argmax(1) == labels).sum()), len(labels)
    return {"loss": nll.mean().item(), "accuracy": k / n, "n": n, "wilson": wilson(k, n)}


# --- the final model on the test set ------------------------------------------------------------

@dataclass
class FinalModel:
    """What 06 saved: the ensemble, its members (seeds), the ablation models (the same recipe
    without augmentation), the normalization and the checkpoint's metadata."""

    model: MLP | Ensemble
    norm: data.Normalization
    members: list
    ablation: list
    meta: dict

    @property
    def trained_on(self) -> str:
        return self.meta.get("data", {}).get("source", "unknown")

    def describe(self) -> str:
        shown = {k: v for k, v in self.model.config.items() if k in ("ensemble_of", "hidden", "dropout", "seeds")}
        lines = [f"model: {shown}", f"recipe: {self.meta.get('recipe')}", f"normalization: {self.norm}",
                 f"trained on: {self.trained_on}; ablation models (no augmentation): {len(self.ablation)}"]
        if self.trained_on != "mnist":
            lines.append("NOTE: this model was not trained on MNIST's own training set. A Kaggle train.csv is drawn "
                         "from all of MNIST, test digits included: the test digits are looked for among its digits "
                         "below, and the test figures are a clean estimate only if none is there.")
        return "\n".join(lines)

    def seen_test_digits(self, images: torch.Tensor) -> int | None:
        """How many of `images` are, pixel for pixel, among the digits this model was trained and
        validated on (0 for MNIST's own training set, which holds none of its test digits); None
        when the prepared data 01 saved is not the data this model's metadata names."""
        if self.trained_on == "mnist":
            return 0
        prepared = data.load_prepared() if paths.prepared_path().exists() else None
        if prepared is None or prepared.parameters != self.meta.get("data"):
            return None
        known = {row.tobytes() for row in prepared.images.reshape(len(prepared.images), -1).numpy()}
        return sum(row.tobytes() in known for row in images.reshape(len(images), -1).numpy())


def load_final(checkpoint: str | os.PathLike) -> FinalModel:
    """The final checkpoint and the ablation checkpoints its metadata names (relative to its folder)."""
    model, norm, blob = load_checkpoint(checkpoint)
    meta = blob.get("meta", {})
    members = list(model.members) if isinstance(model, Ensemble) else [model]
    ablation = [load_checkpoint(Path(checkpoint).parent / name)[0] for name in meta.get("ablation", [])]
    return FinalModel(model, norm, members, ablation, meta)


def _seeds(models, norm, images, labels) -> dict:
    """Each model once, their mean +- std, and their ensemble (probabilities averaged)."""
    probs = [predict_all(m, images, norm) for m in models]
    together = torch.stack(probs).mean(0)
    per_seed = [{"seed": m.config.get("seed"), **metrics(p, labels)} for m, p in zip(models, probs)]
    acc = np.array([r["accuracy"] for r in per_seed])
    n = len(labels)
    return {"per_seed": per_seed, "mean": float(acc.mean()), "std": float(acc.std(ddof=1)) if len(acc) > 1 else None,
            "loss": float(np.mean([r["loss"] for r in per_seed])), "wilson": wilson(round(acc.mean() * n), n),
            "ensemble": metrics(together, labels), "probs": together,
            "correct": [p.argmax(1) == labels for p in probs], "ensemble_correct": together.argmax(1) == labels}


def _summary(run: dict) -> dict:
    return {"test_accuracy_mean": run["mean"], "test_accuracy_std": run["std"], "n_seeds": len(run["per_seed"]),
            "ensemble_test_accuracy": run["ensemble"]["accuracy"], "ensemble_test_loss": run["ensemble"]["loss"],
            "per_seed": run["per_seed"], "wilson": {"mean": run["wilson"], "ensemble": run["ensemble"]["wilson"]}}


def _percent(x: float) -> str:
    return f"{100 * x:.2f}"


def _digits(k: int) -> str:
    return f"{k} digit{'' if k == 1 else 's'}"


def _interval(ci) -> str:
    return f"{100 * ci[0]:.2f}–{100 * ci[1]:.2f}"


def _table(final: dict, plain: dict | None):
    """One row per model: accuracy (mean +- std where over seeds), its Wilson interval, loss."""
    import pandas as pd

    def row(name, accuracy, ci, loss):
        return {"model": name, "test accuracy (%)": accuracy, "95% Wilson interval (%)": _interval(ci),
                "test loss": f"{loss:.4f}"}

    def seeds(run, prefix):
        return [row(f"{prefix}seed {r['seed']}", _percent(r["accuracy"]), r["wilson"], r["loss"])
                for r in run["per_seed"]]

    def together(run, prefix):
        if len(run["per_seed"]) == 1:  # mean and ensemble are that seed
            return []
        return [row(f"{prefix}mean ± std of {len(run['per_seed'])} seeds",
                    f"{_percent(run['mean'])} ± {_percent(run['std'])}", run["wilson"], run["loss"]),
                row(f"{prefix}ensemble of the seeds", _percent(run["ensemble"]["accuracy"]),
                    run["ensemble"]["wilson"], run["ensemble"]["loss"])]

    rows = seeds(final, "") + together(final, "")
    if plain:
        rows += together(plain, "without augmentation: ") or seeds(plain, "without augmentation: ")
    return pd.DataFrame(rows)


@dataclass
class Results:
    """The final model's test results: `record` (the fields of figures/07_test_eval.json), `table`
    (one row per model, for display) and `probs`, the ensemble's probabilities `[N, 10]`."""

    record: dict
    table: object  # a pandas DataFrame
    probs: torch.Tensor

    @property
    def preds(self) -> torch.Tensor:
        return self.probs.argmax(1)


def evaluate_final(final: FinalModel, images: torch.Tensor, labels: torch.Tensor) -> Results:
    """Every seed, their ensemble and the ablation, each evaluated once on the test digits, with
    Wilson intervals and exact McNemar tests.

    The ensemble is tested against each seed, not only a typical one: each seed is a model that
    could have been shipped alone, and all of them show whether the answer depends on the seed.
    Final vs ablation compares the two ensembles, because the ensemble is the model delivered and
    the ablation asks what augmentation adds to it; where the ablation has fewer seeds, the
    record's two `n_seeds` differ and `conclusion` says that ensembling is then measured too.
    In the record, `mcnemar` entries name their `a` and `b`; `wilson` intervals are [low, high]
    fractions, the one of a mean being that of its accuracy on these digits (the seeds share them).
    """
    seen = final.seen_test_digits(images)
    run = _seeds(final.members, final.norm, images, labels)
    plain = _seeds(final.ablation, final.norm, images, labels) if final.ablation else None
    ensemble = run["ensemble_correct"]
    versus_seeds = [{"a": "ensemble", "b": f"seed {r['seed']}", "seed": r["seed"], **mcnemar(ensemble, c)}
                    for r, c in zip(run["per_seed"], run["correct"])]
    versus_plain = None if plain is None else {
        "a": "ensemble", "b": "ensemble without augmentation", **mcnemar(ensemble, plain["ensemble_correct"])}
    record = {**_summary(run), "n_test": len(labels), "wilson_confidence": CONFIDENCE,
              "ablation": None if plain is None else _summary(plain),
              "mcnemar": {"ensemble_vs_seed": versus_seeds, "final_vs_ablation": versus_plain},
              "trained_on": final.trained_on, "test_digits_seen": seen, "clean_test_estimate": seen == 0,
              "model": final.model.config, "recipe": final.meta.get("recipe")}
    return Results(record, _table(run, plain), run["probs"])


def beyond(final: Results, images: torch.Tensor, labels: torch.Tensor) -> list[dict] | None:
    """The recipes trained beyond the budget by `make compare-recipes` (figures/full/06_beyond.json:
    the long MLP and the convnet), each recipe's seeds and their ensemble evaluated once on the
    test digits as the final model's are, and its ensemble against the final one (exact McNemar).
    None when that record is not there."""
    from . import final as F

    if not F.beyond_path().exists():
        return None
    record = json.loads(F.beyond_path().read_text())
    out = []
    for row in record["rows"]:
        loaded = [load_checkpoint(F.beyond_folder() / name) for name in row["checkpoints"]]
        run = _seeds([m for m, _, _ in loaded], loaded[0][1], images, labels)
        out.append({"recipe": row["recipe"], "kind": "convnet" if row.get("conv") else
                    "long" if row["recipe"] == record["long"] else "MLP",
                    **_summary(run), "val_acc_mean": row["val_acc_mean"], "val_acc_std": row["val_acc_std"],
                    "seconds_per_seed": row["seconds_per_seed"],
                    "machine_seconds_per_seed": row["machine_seconds_per_seed"],
                    "compute_share_of_budget": F.compute(row) / F.compute(F.BUDGET),
                    "versus_final": {"a": row["recipe"] + " (ensemble)", "b": "final model (ensemble)",
                                     **mcnemar(run["ensemble_correct"], final.preds == labels)}})
    return out


def context_table(record: dict):
    """07's context table: the published MLP results (`quoted.LITERATURE`) beside this
    repository's models on MNIST's test set, from 07's record (`evaluate_final` and `beyond`)."""
    import pandas as pd

    from .quoted import LITERATURE

    def row(model, accuracy, interval="", seconds="", source="this repository"):
        return {"model": model, "test accuracy (%)": accuracy, "95% Wilson interval (%)": interval,
                "seconds per seed (one core)": seconds, "source": source}

    def mine(name, summary, seconds=None):
        spread = "" if summary["test_accuracy_std"] is None else f" ± {_percent(summary['test_accuracy_std'])}"
        many = summary["n_seeds"] > 1
        return [row(f"{name}: mean of {summary['n_seeds']} seed{'s' if many else ''}",
                    _percent(summary["test_accuracy_mean"]) + spread, _interval(summary["wilson"]["mean"]),
                    "" if seconds is None else f"{seconds:.0f}"),
                row(f"{name}: ensemble of the seeds", _percent(summary["ensemble_test_accuracy"]),
                    _interval(summary["wilson"]["ensemble"]))][:2 if many else 1]

    rows = [row(model, k.rstrip("%"), source=source) for k, model, source in LITERATURE]
    recipe = record.get("recipe") or {}
    name = f" ({'-'.join(map(str, recipe['hidden']))} MLP, {recipe['epochs']} epochs)" if recipe else ""
    rows += mine(f"final model{name}", record)
    if record.get("ablation"):
        rows += mine("the same without augmentation", record["ablation"])
    for b in record.get("beyond") or []:
        rows += mine(b["recipe"] + (" (the long recipe)" if b["kind"] == "long" else ""), b, b["seconds_per_seed"])
    return pd.DataFrame(rows)


def context_conclusion(record: dict, target: float = 0.9935) -> str:
    """The context table's sentences: the long recipe against the target and the published MLPs,
    the convnet against the final model; every number and number-dependent word from `record`."""
    beyond = {b["kind"]: b for b in record.get("beyond") or []}
    if not beyond:
        return ("No models beyond the budget are committed (figures/full/06_beyond.json): "
                "`make compare-recipes` trains them.")
    text = []
    n = record["n_test"]
    for kind, b in beyond.items():
        t = b["versus_final"]
        mean = b["test_accuracy_mean"]
        line = (f"The {'long recipe' if kind == 'long' else 'small ' + kind} ({b['recipe']}; {b['n_seeds']} seeds, "
                f"{b['seconds_per_seed']:.0f} s a seed on one core, {b['compute_share_of_budget']:.1f} times the "
                f"final recipe's training compute) reaches {_percent(mean)} ± {_percent(b['test_accuracy_std'])} % "
                f"on the test set ({_interval(b['wilson']['mean'])} %). Its ensemble against the final model's: "
                f"{t['a_only']} vs {t['b_only']} digits, {_p(t['p_value'])}, so {_verdict(t, 'its ensemble', n)}.")
        if kind == "long":
            reached = mean >= target
            line += (f" The target of a {_percent(target)} % test mean is {'reached' if reached else 'not reached'}"
                     + ("" if reached else f" (short by {_percent(target - mean)} points)") + ".")
        text.append(line)
    return "\n\n".join(text)


def _p(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.2g}"


def _verdict(test: dict, a: str, n: int) -> str:
    """Words for a paired difference, chosen by its p-value and direction."""
    if test["p_value"] < SIGNIFICANCE:
        ahead = "ahead" if test["a_only"] > test["b_only"] else "behind"
        return f"{a} is {ahead} by more than the test set's sampling noise explains"
    return f"the difference is within what {n:,} digits can resolve"


def conclusion(results: Results | dict, photo: dict | None = None) -> str:
    """07's conclusion in Markdown, every number and every number-dependent word from `results`
    (or its record, as saved), and the photo check's sentence when `photo` is given."""
    r = getattr(results, "record", results)
    n, level, m = r["n_test"], f"{100 * r['wilson_confidence']:g} %", r["n_seeds"]
    seen = r.get("test_digits_seen")
    text = [] if r["trained_on"] == "mnist" else [
        f"The model was trained on {r['trained_on']}, not on MNIST's own training set; "
        + ("none of these test digits is among its digits, pixel for pixel, so this is still a clean estimate."
           if seen == 0 else
           f"**not a clean estimate:** {seen:,} of these test digits are among its digits." if seen else
           "**not a clean estimate:** its digits are not at hand to check, so it may have seen these test digits.")]
    mean, std = r["test_accuracy_mean"], r["test_accuracy_std"]
    se = (mean * (1 - mean) / n) ** 0.5
    sampling = (f"{n:,} test digits are a sample, and the {level} Wilson interval of an accuracy like this one on them "
                f"is {_interval(r['wilson']['mean'])} %, a binomial standard error of {_percent(se)} points")
    if m > 1:
        compared = ("larger than the seed spread, so the test set's size, not the seed, limits how precisely the "
                    "accuracy is known." if se > std else "no larger than the seed spread.")
        text.append(f"Over {m} seeds, test accuracy is **{_percent(mean)} ± {_percent(std)} %**: mean ± standard "
                    f"deviation over seeds, how much training with another seed moves it. The test set's sampling "
                    f"error is another thing: {sampling}, {compared}")
        tests = r["mcnemar"]["ensemble_vs_seed"]
        verdicts = [_verdict(t, "the ensemble", n) for t in tests]
        said = (f"against every seed, {verdicts[0]}" if len(set(verdicts)) == 1 else
                "; ".join(f"against seed {t['seed']}, {v}" for t, v in zip(tests, verdicts)))
        counts = "; ".join(f"{t['a_only']} vs {t['b_only']} for seed {t['seed']} ({_p(t['p_value'])})" for t in tests)
        text.append(f"The ensemble of the seeds scores **{_percent(r['ensemble_test_accuracy'])} %** "
                    f"({_interval(r['wilson']['ensemble'])} %). Digit by digit (exact McNemar test), the digits only "
                    f"the ensemble gets right against those only the seed gets right are {counts}: {said}.")
    else:
        text.append(f"With one seed, test accuracy is **{_percent(mean)} %** and there is no seed spread; its "
                    f"uncertainty is the test set's sampling error: {sampling}.")
    ab = r["ablation"]
    if ab is None:
        text.append("No ablation (the recipe without augmentation) was saved with this model.")
    else:
        k, t = ab["n_seeds"], r["mcnemar"]["final_vs_ablation"]
        scores = (f"{k} seeds score {_percent(ab['test_accuracy_mean'])} ± {_percent(ab['test_accuracy_std'])} % and "
                  f"their ensemble {_percent(ab['ensemble_test_accuracy'])} %" if k > 1 else
                  f"one seed scores {_percent(ab['ensemble_test_accuracy'])} %")
        text.append(f"Without augmentation, {scores} ({_interval(ab['wilson']['ensemble'])} %). The final model gets "
                    f"{_digits(t['a_only'])} right that the ablation misses and misses {t['b_only']} that it gets right "
                    f"({_p(t['p_value'])}): {_verdict(t, 'the final model', n)}."
                    + ("" if k == m else f" The ablation has {k} seed{'s' if k > 1 else ''} against the final model's "
                                         f"{m}, so this comparison measures ensembling as well as augmentation."))
    if photo:
        text.append(photo_conclusion(photo))
    return "\n\n".join(text)


# --- where it goes wrong -----------------------------------------------------------------------

def per_class(labels: torch.Tensor, preds: torch.Tensor):
    """Precision, recall, F1 and support per digit (scikit-learn), as a DataFrame."""
    import pandas as pd
    from sklearn.metrics import precision_recall_fscore_support

    p, r, f, s = precision_recall_fscore_support(labels.numpy(), preds.numpy(), labels=list(range(10)),
                                                 zero_division=0)
    return pd.DataFrame({"precision": p, "recall": r, "f1": f, "support": s}).rename_axis("digit")


def confusion(labels: torch.Tensor, preds: torch.Tensor):
    """Counts of (true digit, predicted digit), as a labelled DataFrame."""
    import pandas as pd
    from sklearn.metrics import confusion_matrix

    cm = confusion_matrix(labels.numpy(), preds.numpy(), labels=list(range(10)))
    return pd.DataFrame(cm, index=pd.Index(range(10), name="true"),
                        columns=pd.Index(range(10), name="predicted"))


def confident_mistakes(probs: torch.Tensor, labels: torch.Tensor, k: int = 20) -> torch.Tensor:
    """Indices of the `k` wrong predictions the model was most sure of, most confident first."""
    confidence, preds = probs.max(1)
    wrong = torch.nonzero(preds != labels).flatten()
    return wrong[confidence[wrong].argsort(descending=True)[:k]]


# --- digits drawn and photographed like a user's ---------------------------------------------------

def _version(name: str, right: torch.Tensor, refused: int = 0) -> dict:
    k, n = int(right.sum()), len(right)
    return {"version": name, "accuracy": k / n, "wilson": wilson(k, n), "no_digit_found": refused}


def _read(model: MLP, norm: data.Normalization, pages, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Which images `predict.preprocess` and the model read as their label, and how many were
    refused (no digit found): a refused image counts as misread, as it would for a user."""
    from .predict import ImageError, preprocess

    seen, found = [], []
    for page in pages:
        try:
            seen.append(preprocess(page))
            found.append(True)
        except ImageError:
            seen.append(torch.zeros(28, 28, dtype=torch.uint8))
            found.append(False)
    right = (predict_all(model, torch.stack(seen), norm).argmax(1) == labels) & torch.tensor(found)
    return right, found.count(False)


def read_as_files(pages, names: list[str], model: MLP, norm: data.Normalization) -> tuple[list[Path], list]:
    """Save each image of `pages` under its name in a fresh temporary folder and read the files as
    `python -m helpers.predict` reads a user's: returns the files and their `predict.Prediction`s."""
    from .predict import predict_images

    folder = Path(tempfile.mkdtemp(prefix="digits-"))
    files = [folder / name for name in names]
    for page, file in zip(pages, files):
        page.save(file)
    return files, predict_images(files, model=model, norm=norm)


def rendered_accuracy(model: MLP, norm: data.Normalization, images: torch.Tensor, labels: torch.Tensor,
                      n: int | None = None, seed: int = 0, sizes=(28, 56, 112, 300)) -> dict | None:
    """Accuracy on digits re-drawn as a user's image would be, against the same digits as given.

    `n` digits drawn at random (`sample`, with `seed`; all when None) are each drawn black on white
    at every `size` px, at a random offset in a canvas 1.5x larger, and also cropped to their ink
    (no paper left at any border, as a crop tool that snaps to the digit leaves it), then go through
    `predict.preprocess` (grayscale, invert, crop, 20x20, centre of mass) and the same
    normalization as training. Every version carries its Wilson interval; each size, its exact
    McNemar test against the originals on the same digits (A: original, B: re-drawn).
    """
    from .predict import crop_to_ink, render_digit

    if n == 0:  # none asked for: nothing to report
        return None
    idx = sample(len(images), n, seed)
    images, labels = images[idx], labels[idx]
    rng = np.random.default_rng(seed)
    original = predict_all(model, images, norm).argmax(1) == labels
    versions = [_version("original", original)]
    for size in sizes:
        canvas = int(size * 1.5)
        right, refused = _read(model, norm, (render_digit(img, size, tuple(int(v) for v in rng.integers(
            0, canvas - size + 1, 2)), canvas) for img in images), labels)
        versions.append({**_version(f"{size}px", right, refused), "mcnemar": mcnemar(original, right)})
        right, refused = _read(model, norm, (crop_to_ink(render_digit(img, size, (0, 0), size)) for img in images),
                               labels)
        versions.append({**_version(f"{size}px, cropped to its ink", right, refused),
                         "mcnemar": mcnemar(original, right)})
    return {"n": len(idx), "seed": seed, "versions": versions}


def rendered_table(rendered: dict):
    """`rendered_accuracy`'s result for display: accuracy, interval, digits lost and gained, p."""
    import pandas as pd

    return pd.DataFrame([{"digits": v["version"], "accuracy (%)": _percent(v["accuracy"]),
                          "95% Wilson interval (%)": _interval(v["wilson"]), "no digit found": v["no_digit_found"],
                          "lost vs original": v["mcnemar"]["a_only"] if "mcnemar" in v else "",
                          "gained": v["mcnemar"]["b_only"] if "mcnemar" in v else "",
                          "McNemar p": f"{v['mcnemar']['p_value']:.2g}" if "mcnemar" in v else ""}
                         for v in rendered["versions"]])


def _clean_photo(clean: torch.Tensor, photo: torch.Tensor) -> dict:
    """Accuracies of the same digits rendered clean and photographed, with their Wilson intervals."""
    c, p = _version("clean", clean), _version("photo", photo)
    return {"clean": c["accuracy"], "photo": p["accuracy"], "wilson": {"clean": c["wilson"], "photo": p["wilson"]}}


def photo_accuracy(model: MLP, norm: data.Normalization, images: torch.Tensor, labels: torch.Tensor,
                   n: int | None = None, seed: int = 0, bins=((0.3, 0.5), (0.5, 0.7), (0.7, 0.9))) -> dict | None:
    """Accuracy on digits drawn as phone photos, against clean renderings of the same digits.

    `n` digits drawn at random (`sample`, with `seed`; all when None). Digit `i` of `images` gets
    the shot `photos.shot_for(seed, i)` (frame, size, place, angle, paper, light, noise, blur,
    JPEG quality), whichever others are drawn; the photo and the black-on-white rendering with
    the same geometry both go through `predict.preprocess`. A photo in which no digit is found
    counts as wrong. Both accuracies carry Wilson intervals, `mcnemar` pairs them (A: clean,
    B: photo), and `by_paper` splits them by the paper's luminance, bins [low, high).
    """
    from . import photos

    if n == 0:  # none asked for: nothing to report
        return None
    idx = sample(len(images), n, seed)
    shots = [photos.shot_for(seed, int(i)) for i in idx]
    images, labels = images[idx], labels[idx]
    right_clean, _ = _read(model, norm, (photos.clean(img, s) for img, s in zip(images, shots)), labels)
    right_photo, refused = _read(model, norm, (photos.photograph(img, s) for img, s in zip(images, shots)), labels)
    paper = torch.tensor([s.paper for s in shots])
    by_paper = []
    for low, high in bins:
        inside = (paper >= low) & (paper < high)
        by_paper.append({"paper": (low, high), "n": int(inside.sum()),
                         **(_clean_photo(right_clean[inside], right_photo[inside]) if inside.any() else {})})
    return {"n": len(idx), "seed": seed, **_clean_photo(right_clean, right_photo),
            "mcnemar": mcnemar(right_clean, right_photo), "no_digit_found": refused, "by_paper": by_paper}


def photo_table(photo: dict):
    """`photo_accuracy`'s result for display: all digits, then each paper-brightness bin."""
    import pandas as pd

    def row(name, r):
        cells = {"paper brightness": name, "digits": r["n"]}
        for kind in ("clean", "photo"):
            cells[f"{kind} (%)"] = _percent(r[kind]) if r["n"] else ""
            cells[f"{kind} 95% interval (%)"] = _interval(r["wilson"][kind]) if r["n"] else ""
        return cells

    return pd.DataFrame([row("all", photo)] + [row(f"{b['paper'][0]:.1f}–{b['paper'][1]:.1f}", b)
                                               for b in photo["by_paper"]])


def photo_conclusion(photo: dict, margin: float = 0.01) -> str:
    """One Markdown paragraph on photos vs clean renderings, its words chosen by the numbers.

    "As well as" needs both no significant difference (McNemar) and a sample that rules out a
    loss of `margin` (a fraction of all digits): the digits the photo loses and the clean
    rendering reads bound any net loss, so the upper end of their Wilson interval must be below it.
    """
    n, t = photo["n"], photo["mcnemar"]
    bound = wilson(t["a_only"], n)[1]
    lost = f"{100 * margin:g} %"
    text = (f"On {n:,} test digits drawn at random, clean renderings are read right {_percent(photo['clean'])} % of "
            f"the time ({_interval(photo['wilson']['clean'])} %, {100 * CONFIDENCE:g} % Wilson interval) and photos "
            f"{_percent(photo['photo'])} % ({_interval(photo['wilson']['photo'])} %). Digit by digit, photos lose "
            f"{_digits(t['a_only'])} the clean rendering reads and read {t['b_only']} it gets wrong (exact McNemar "
            f"{_p(t['p_value'])})" + (f"; in {photo['no_digit_found']} of the photos no digit was found at all" if
                                      photo["no_digit_found"] else "") + ". ")
    if t["p_value"] < SIGNIFICANCE:
        return text + (f"Photos are read {'worse' if t['a_only'] > t['b_only'] else 'better'} than clean renderings, "
                       "by more than the sample's noise explains.")
    if bound < margin:
        return text + (f"Photos are read as well as clean renderings: no difference shows, and the digits lost to the "
                       f"photo are at most {_percent(bound)} % of all ({100 * CONFIDENCE:g} % upper bound), less than "
                       f"the {lost} this check is sized to see.")
    return text + (f"No difference shows, but {n:,} digits cannot rule out that photos lose up to {_percent(bound)} % "
                   f"of digits ({100 * CONFIDENCE:g} % upper bound), more than {lost}: saying \"as well as\" needs a "
                   f"larger sample.")


def kaggle_submission(model: MLP, norm: data.Normalization, test_csv: str, path: Path) -> str:
    """Write Kaggle's `submission.csv` (ImageId from 1, Label) for the digits of `test_csv` to
    `path`; say what was done (nothing without a `test_csv`)."""
    if not test_csv:
        return "no kaggle_test_csv given: no submission written (papermill ... -p kaggle_test_csv path/to/test.csv)"
    images, _ = data.read_digits_csv(test_csv)
    written = kaggle.write_submission(path, predict_all(model, images, norm).argmax(1))
    return f"wrote {len(images)} predictions to {paths.show(written)}"
