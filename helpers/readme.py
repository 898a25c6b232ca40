"""The README's measured numbers, written from the committed results: no number is typed by hand.

    python -m helpers.readme           # rewrite README.md's rendered blocks from figures/ and notebooks/
    python -m helpers.readme --check   # exit 1 (and say which block) when README.md is out of date
    python -m helpers.readme --snapshot REV --cpu NAME   # keep an earlier run's key results to compare machines

A rendered block is the text between `<!-- rendered: NAME -->` and `<!-- /rendered: NAME -->`;
everything outside the blocks is prose, which quotes no measurement (tests/test_prose.py). Each
block is a function of the JSON records under figures/ (and figures/full/) and of the
notebooks' papermill metadata, so `make reproduce` followed by this command gives a README
that says what that run measured. `make reproduce` and `make reproduce-full` run it at the end.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from . import notebooks, paths, proxy, store, words

BLOCK = re.compile(r"(<!-- rendered: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /rendered: (?P=name) -->)", re.S)
TEST_DIGITS = "10,000 MNIST test digits"


def _json(name: str) -> dict:
    return json.loads((paths.figures_dir() / name).read_text())


def _pct(v: float | None) -> str:
    """An accuracy in percent with its sign, "—" when there is none."""
    return "—" if v is None else f"{100 * v:.2f}%"


def _spread(mean: float, std: float | None, n: int) -> str:
    return _pct(mean) + (f" ± {100 * std:.2f}" if std is not None else "") + f" ({n} seed{'s' if n != 1 else ''})"


def _interval(ci: list | None) -> str:
    return "" if not ci else f" [{100 * ci[0]:.2f}, {100 * ci[1]:.2f}]"


def _minutes(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    return f"{m} min {s:02d} s" if m else f"{s} s"


def _run_day(notebook: Path) -> str:
    return json.loads(notebook.read_text())["metadata"]["papermill"]["start_time"][:10]


def _mcnemar(m: dict | None) -> str:
    """Digits only A gets right, only B, and the exact McNemar p-value."""
    return "" if not m else f"{m['a_only']} vs {m['b_only']} digits, p = {m['p_value']:.2g}"


def _noise(within: bool | None) -> str:
    return {True: "within noise of the full best", False: "outside noise of the full best",
            None: "no noise estimate to judge it by"}[within]


def _reproduce_seconds() -> float:
    return sum(notebooks.recorded_seconds(paths.NOTEBOOKS / f"{n}.ipynb") or 0 for n in notebooks.ORDER)


def results() -> str:
    t, f03 = _json("07_test_eval.json"), _json("03_training.json")
    g = _json("06_grid_search.json")
    full = g.get("against_full") or {}
    names = list(g["parameters"]["grid"])
    abl = t.get("ablation") or {}
    photo = t.get("photo_accuracy") or {}
    w, mc = t.get("wilson", {}), t.get("mcnemar", {})
    rows = [
        "| | this repository | the seed notebook |",
        "| --- | --- | --- |",
        f"| **test accuracy**, final model (07; {TEST_DIGITS}, each seed evaluated once): mean ± std over seeds "
        f"[95% interval on these digits] | **{_spread(t['test_accuracy_mean'], t['test_accuracy_std'], t['n_seeds'])}**"
        f"{_interval(w.get('mean'))} | 73.78% |",
        f"| test accuracy, the seeds as one ensemble [95% interval]; McNemar against each seed: digits only the "
        f"ensemble gets right vs only the seed | {_pct(t['ensemble_test_accuracy'])}{_interval(w.get('ensemble'))}; "
        + "; ".join(f"seed {m['seed']}: {_mcnemar(m)}" for m in mc.get("ensemble_vs_seed", [])) + " | — |",
    ]
    if abl:
        rows.append(f"| test accuracy without augmentation (ablation), and its ensemble [95% interval]; McNemar: "
                    f"digits only the final ensemble gets right vs only the ablation's | "
                    f"{_spread(abl['test_accuracy_mean'], abl['test_accuracy_std'], abl['n_seeds'])}; ensemble "
                    f"{_pct(abl.get('ensemble_test_accuracy'))}{_interval((abl.get('wilson') or {}).get('ensemble'))}; "
                    f"{_mcnemar(mc.get('final_vs_ablation'))} | — |")
    best = g["best"]
    rows += [
        f"| validation accuracy, 03_training ({'–'.join(map(str, f03['parameters']['hidden']))} MLP, "
        f"{len(f03['history'])} epochs, one seed) | {_pct(f03['final']['val_acc'])} | \"98%\" |",
        f"| best learning-rate × batch-size pair (06, default budget), and that pair at the full budget | "
        f"{words.point_words(best, names)}: {_spread(best['val_acc_mean'], best['val_acc_std'], best['n_seeds'])}"
        + (f"; at the full budget {_pct(full.get('pick_full_mean'))}, {_noise(full.get('within_noise'))} "
           f"({words.point_words(full['full_best'], names)}, {_pct(full['full_best']['val_acc_mean'])})" if full else "")
        + " | the last trial's accuracy, printed as the best |",
    ]
    if photo:
        pw = photo.get("wilson", {})
        rows.append(f"| phone-photo-like digits vs clean renderings of the same {photo['n']:,} test digits (a random "
                    f"sample) [95% interval]; McNemar: digits only the clean rendering reads vs only the photo | "
                    f"photos {_pct(photo['photo'])}{_interval(pw.get('photo'))}, clean {_pct(photo['clean'])}"
                    f"{_interval(pw.get('clean'))}; {_mcnemar(photo.get('mcnemar'))} | — |")
    rows.append(f"| `make reproduce`, 01 → 07, from scratch | {_minutes(_reproduce_seconds())} on the machine of the "
                f"committed run ({_run_day(paths.NOTEBOOKS / '01_data.ipynb')}; per notebook under Speed) | — |")
    fulls = _full_runs()
    if fulls:
        rows.append(f"| `make reproduce-full`, 04–06 at the full budget, {fulls['seeds']} seeds | "
                    f"{_minutes(fulls['seconds'])}: {_tasks(fulls)} | — |")
    return "\n".join(rows) + "\n"


def _tasks(t: dict) -> str:
    return (f"{t['trained']} of {t['total']} tasks trained in that run"
            + (f", {t['done_before']} already in the study" if t["done_before"] else ""))


def _full_runs() -> dict | None:
    """The committed full-budget run: its notebooks' durations and what their studies did with their tasks."""
    found = []
    for name in notebooks.STUDIES:
        nb, rec = paths.figures_dir() / "full" / f"{name}.ipynb", paths.figures_dir() / "full" / f"{name}.json"
        if not (nb.exists() and rec.exists()):
            return None
        r = json.loads(rec.read_text())
        if not r.get("tasks"):  # a record from before the studies counted what they trained
            return None
        found.append({"name": name, "seconds": notebooks.recorded_seconds(nb) or 0, **r["tasks"],
                      "seeds": len(r["parameters"]["seeds"])})
    total = {k: sum(f[k] for f in found) for k in ("seconds", "total", "trained", "done_before")}
    return {**total, "seeds": found[0]["seeds"], "per_notebook": found}


def _rho(r: float | None, by_seed: dict | None, c: dict | None) -> str:
    if r is None:
        return "—"
    if not (by_seed and c):
        return f"{r:.2f}"
    return f"{r:.2f}; seed by seed {by_seed['mean']:.2f}, noise ceiling {c['mean']:.2f} ({c['min']:.2f} to {c['max']:.2f})"


def studies_() -> str:
    rows = ["| study | default budget | Spearman ρ vs full, all points (means; seed by seed; ceiling) | "
            f"over the full budget's best {proxy.TOP_K} | its best point | that point at the full budget | full-budget best |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for name in notebooks.STUDIES[1:] + notebooks.STUDIES[:1]:  # 04, 05, 06
        r = _json(f"{name}.json")
        names = list(r["parameters"]["grid"])
        f = r.get("against_full") or {}
        b = r["best"]
        seeds = sorted({s for row in r["rows"] for s in row.get("seeds", [])})
        head = f"| {name} | {len(seeds)} seeds, {len(r['rows'])} points | "
        best = f"{words.point_words(b, names)}: {_spread(b['val_acc_mean'], b['val_acc_std'], b['n_seeds'])}"
        if not f:
            rows.append(head + f"— | — | {best} | — | — |")
            continue
        top = (_rho(f.get("spearman_top"), f.get("by_seed_top"), f.get("ceiling_top"))
               if f.get("n_top", 0) < f.get("n_points", 0) else "(all points)")
        rows.append(head + f"{_rho(f.get('spearman'), f.get('by_seed'), f.get('ceiling'))} | {top} | {best} | "
                    f"{_pct(f.get('pick_full_mean'))}, {_noise(f.get('within_noise'))} | "
                    f"{words.point_words(f['full_best'], names)}: {_pct(f['full_best']['val_acc_mean'])} |")
    return "\n".join(rows) + "\n"


def recipes() -> str:
    from . import final

    c = final.load_comparison()
    if c is None:
        return "No committed recipe comparison: run `make compare-recipes`.\n"
    rows = ["| recipe | validation, mean ± std over seeds | one seed: s on one core (s of the machine) |",
            "| --- | --- | --- |"]
    for r in c["rows"]:
        mark = "**" if r["recipe"] == c["chosen"] else ""
        rows.append(f"| {mark}{r['recipe']}{mark}{' (chosen)' if mark else ''} | "
                    f"{mark}{_spread(r['val_acc_mean'], r['val_acc_std'], r['n_seeds'])}{mark} | "
                    f"{r['seconds_per_seed']:.0f} ({r['machine_seconds_per_seed']:.0f}) |")
    return "\n".join(rows) + "\n"


def speed() -> str:
    rows = ["| notebook | `make reproduce` (default budget) | `make reproduce-full` |", "| --- | --- | --- |"]
    fulls = _full_runs()
    per_full = {f["name"]: f for f in fulls["per_notebook"]} if fulls else {}
    for name in notebooks.ORDER:
        d = notebooks.recorded_seconds(paths.NOTEBOOKS / f"{name}.ipynb")
        f = per_full.get(name)
        rows.append(f"| {name} | {_minutes(d) if d else '—'} | " + (f"{_minutes(f['seconds'])} ({_tasks(f)})" if f else "—") + " |")
    rows.append(f"| **total** | **{_minutes(_reproduce_seconds())}** | "
                + (f"**{_minutes(fulls['seconds'])}**" if fulls else "—") + " |")
    return "\n".join(rows) + "\n"


def context() -> str:
    """07's context table (the published MLPs beside this repository's models) and its sentences."""
    from . import evaluate as E

    t = _json("07_test_eval.json")
    table = E.context_table(t)
    rows = ["| " + " | ".join(table.columns) + " |", "|" + " --- |" * len(table.columns)]
    rows += ["| " + " | ".join(map(str, r)) + " |" for r in table.itertuples(index=False)]
    return "\n".join(rows) + "\n\n" + E.context_conclusion(t) + "\n"


AUTOGRAD_WITHIN = 1.2  # autograd's backward replaces the hand-written one if no slower than this at every batch


def backward() -> str:
    """The stacked trainer's hand-written backward against autograd's, from `make bench`."""
    if not (paths.figures_dir() / "bench_stacked.json").exists():
        return "No committed timings: run `make bench`.\n"
    r = _json("bench_stacked.json")
    rows = ["| batch | one model alone, our loop (s) | models stacked | hand-written backward (s) | "
            "autograd's backward (s) | autograd / hand-written: best times (each round) |",
            "| --- | --- | --- | --- | --- | --- |"]
    best, rounds = {}, {}
    for row in r["rows"]:
        b = row["batch_size"]
        best[b], rounds[b] = row["autograd_s"] / row["stacked_s"], row["autograd_ratio_by_round"]
        rows.append(f"| {b} | {row['alone_s']:.2f} | {row['models']} | {row['stacked_s']:.2f} | {row['autograd_s']:.2f} "
                    f"| {best[b]:.2f}× ({min(rounds[b]):.2f}–{max(rounds[b]):.2f}×) |")
    slow = {b: q for b, q in best.items() if q > AUTOGRAD_WITHIN}
    if not slow:
        verdict = (f"Autograd is within {AUTOGRAD_WITHIN}× of the hand-written backward at every batch size measured, "
                   "so the hand-written backward no longer earns its place.")
    else:
        verdict = ("Autograd's backward takes " + " and ".join(f"{q:.2f}× as long at batch {b}" for b, q in slow.items())
                   + f", beyond the {AUTOGRAD_WITHIN}× that would pay for one way of computing gradients instead "
                   "of two, so the hand-written backward stays.")
        close = [b for b in slow if min(rounds[b]) <= AUTOGRAD_WITHIN]
        if close:
            verdict += (" Single rounds at batch " + " and ".join(map(str, close)) + f" reach {AUTOGRAD_WITHIN}× or "
                        "below: this machine's noise is as large as the margin, so measure again before relying on it.")
    return ("\n".join(rows) + f"\n\nOne epoch of {r['parameters']['digits']:,} digits, seconds the best of "
            f"{r['parameters']['repeats']} interleaved rounds, torch threads: {r['parameters']['threads']}, on "
            f"{r['versions']['cpu']} ({r['created'][:10]}). {verdict}\n")


def kaggle() -> str:
    if not (paths.figures_dir() / "kaggle.json").exists():
        return "No committed round trip: run `make kaggle`.\n"
    r = _json("kaggle.json")
    p = r["pipeline"]
    rows = ["| submission | trained on | accuracy on the held-back test labels [95% Wilson] | time |",
            "| --- | --- | --- | --- |",
            f"| `submission.csv`, 07's ensemble | 01's training split | {_pct(p['accuracy'])}{_interval(p['wilson'])} "
            f"({p['correct']:,} of {p['n']:,}) | {_minutes(sum(r['notebook_seconds'].values()))} for 01 → 07 |"]
    if r.get("refit"):
        f, s = r["refit"], r["refit"]["score"]
        rows.append(f"| `submission_refit.csv`, {len(f['seeds'])} seeds refitted | training + validation "
                    f"({f['training_digits']:,} digits) | {_pct(s['accuracy'])}{_interval(s['wilson'])} "
                    f"({s['correct']:,} of {s['n']:,}) | {_minutes(f['seconds'])} more |")
    return "\n".join(rows) + (f"\n\nThe whole round trip, writing the CSV files included: {_minutes(r['seconds'])}, "
                              f"run on {r['created'][:10]}.\n")


# What a second machine's run is compared on: (label, record, how to read the value)
KEY_RESULTS = [
    ("03 validation accuracy (one seed)", "03_training.json", lambda r: (r["final"]["val_acc"], None)),
    *[(f"{n} best point (default budget)", f"{n}.json", lambda r: (r["best"], r["best"]["val_acc_std"]))
      for n in ("04_lr_sweep", "05_batch_sweep", "06_grid_search")],
    ("final model, validation", "06_grid_search_final.json", lambda r: (r["final"]["val_acc_mean"], r["final"]["val_acc_std"])),
    ("final model, test (mean over seeds)", "07_test_eval.json", lambda r: (r["test_accuracy_mean"], r["test_accuracy_std"])),
    ("ensemble, test", "07_test_eval.json", lambda r: (r["ensemble_test_accuracy"], None)),
]
PREVIOUS = "previous_run.json"   # figures/: key results of an earlier committed run on another machine


def _key_values(read) -> list[dict]:
    out = []
    for label, name, get in KEY_RESULTS:
        record = read(name)
        value, std = get(record)
        if isinstance(value, dict):  # a study's best point: which point, and its mean
            out.append({"result": label, "point": words.point_words(value, list(record["parameters"]["grid"])),
                        "mean": value["val_acc_mean"], "std": std})
        else:
            out.append({"result": label, "mean": value, "std": std})
    return out


def snapshot(rev: str, cpu: str) -> Path:
    """Save the key results of commit `rev` (read from git) as figures/previous_run.json."""
    import subprocess

    def read(name: str) -> dict:
        return json.loads(subprocess.run(["git", "show", f"{rev}:figures/{name}"], cwd=paths.ROOT, check=True,
                                         capture_output=True, text=True).stdout)
    day = read("07_test_eval.json")["created"][:10]
    return store.save_json(paths.figures_dir() / PREVIOUS, store.result_record(
        {"commit": rev, "cpu": cpu, "day": day}, None, results=_key_values(read)))


def machines() -> str:
    path = paths.figures_dir() / PREVIOUS
    if not path.exists():
        return "No earlier run on another machine is recorded (`python -m helpers.readme --snapshot REV --cpu NAME`).\n"
    before = json.loads(path.read_text())
    then = {v["result"]: v for v in before["results"]}
    cpu_now = _json("07_test_eval.json")["versions"].get("cpu", "this machine")
    p = before["parameters"]
    rows = [f"| result | committed run ({cpu_now}, {_run_day(paths.NOTEBOOKS / '07_test_eval.ipynb')}) | "
            f"commit {p['commit']} ({p['cpu']}, {p['day']}) |", "| --- | --- | --- |"]

    def cell(v: dict | None) -> str:
        if v is None:
            return "—"
        return (f"{v['point']}: " if "point" in v else "") + _pct(v["mean"]) + (
            f" ± {100 * v['std']:.2f}" if v["std"] is not None else "")
    for now in _key_values(_json):
        rows.append(f"| {now['result']} | {cell(now)} | {cell(then.get(now['result']))} |")
    return "\n".join(rows) + "\n"


RENDERERS = {"results": results, "context": context, "studies": studies_, "recipes": recipes, "speed": speed,
             "machines": machines, "kaggle": kaggle,
             "backward": backward}


def render(text: str) -> str:
    """`text` with every rendered block written anew; an unknown block name is an error."""
    def body(m: re.Match) -> str:
        name = m["name"]
        if name not in RENDERERS:
            raise KeyError(f"README block '{name}' has no renderer (known: {', '.join(RENDERERS)})")
        return m.group(1) + RENDERERS[name]() + m.group(4)
    return BLOCK.sub(body, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only say whether README.md is up to date")
    parser.add_argument("--snapshot", metavar="REV", help=f"first save commit REV's key results as figures/{PREVIOUS}")
    parser.add_argument("--cpu", help="with --snapshot: the processor that commit's run was made on")
    args = parser.parse_args(argv)
    if args.snapshot:
        if not args.cpu:
            parser.error("--snapshot needs --cpu (the records of older runs do not name their processor)")
        print(f"saved {paths.show(snapshot(args.snapshot, args.cpu))}")
    path = paths.ROOT / "README.md"
    old = path.read_text()
    new = render(old)
    if args.check:
        stale = [m["name"] for m, n in zip(BLOCK.finditer(old), BLOCK.finditer(new)) if m["body"] != n["body"]]
        if stale:
            print(f"README.md is out of date in blocks {stale}: run `python -m helpers.readme`", file=sys.stderr)
            return 1
        return 0
    if new != old:
        with store.atomic_path(path) as tmp:
            tmp.write_text(new)
    print(f"README.md: {len(BLOCK.findall(new))} rendered blocks written from {paths.show(paths.figures_dir())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
