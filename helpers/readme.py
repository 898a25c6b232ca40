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

from . import notebooks, paths, store

BLOCK = re.compile(r"(<!-- rendered: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /rendered: (?P=name) -->)", re.S)
TEST_DIGITS = "10,000 MNIST test digits"


def _json(name: str) -> dict:
    return json.loads((paths.figures_dir() / name).read_text())


def _pct(v: float | None, digits: int = 2) -> str:
    return "—" if v is None else f"{100 * v:.{digits}f}"


def _spread(mean: float, std: float | None, n: int) -> str:
    return f"{_pct(mean)}%" + (f" ± {_pct(std)}" if std is not None else "") + f" ({n} seed{'s' if n != 1 else ''})"


def _interval(ci: list | None) -> str:
    return "" if not ci else f" [{_pct(ci[0])}, {_pct(ci[1])}]"


def _minutes(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    return f"{m} min {s:02d} s" if m else f"{s} s"


def _duration(notebook: Path) -> float | None:
    meta = json.loads(notebook.read_text()).get("metadata", {}).get("papermill", {})
    return meta.get("duration")


def _run_day(notebook: Path) -> str:
    return json.loads(notebook.read_text())["metadata"]["papermill"]["start_time"][:10]


def _point(p: dict, names) -> str:
    words = {"lr": "lr", "batch_size": "batch"}
    return " / ".join(f"{words[n]} {p[n]:g}" for n in names)


def _mcnemar(m: dict | None) -> str:
    """Digits only A gets right, only B, and the exact McNemar p-value."""
    return "" if not m else f"{m['a_only']} vs {m['b_only']} digits, p = {m['p_value']:.2g}"


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
        f"ensemble gets right vs only the seed | {_pct(t['ensemble_test_accuracy'])}%{_interval(w.get('ensemble'))}; "
        + "; ".join(f"seed {m['seed']}: {_mcnemar(m)}" for m in mc.get("ensemble_vs_seed", [])) + " | — |",
    ]
    if abl:
        rows.append(f"| test accuracy without augmentation (ablation), and its ensemble [95% interval]; McNemar: "
                    f"digits only the final ensemble gets right vs only the ablation's | "
                    f"{_spread(abl['test_accuracy_mean'], abl['test_accuracy_std'], abl['n_seeds'])}; ensemble "
                    f"{_pct(abl.get('ensemble_test_accuracy'))}%{_interval((abl.get('wilson') or {}).get('ensemble'))}; "
                    f"{_mcnemar(mc.get('final_vs_ablation'))} | — |")
    rows += [
        f"| validation accuracy, 03_training ({'–'.join(map(str, f03['parameters']['hidden']))} MLP, "
        f"{len(f03['history'])} epochs, one seed) | {_pct(f03['final']['val_acc'])}% | \"98%\" |",
        f"| best learning-rate × batch-size pair (06, default budget), and that pair at the full budget | "
        f"{_point(g['best'], names)}: {_spread(g['best']['val_acc_mean'], g['best']['val_acc_std'], g['best']['n_seeds'])}; "
        f"at the full budget {_pct(full.get('pick_full_mean'))}% (full-budget best: {_point(full['full_best'], names)}, "
        f"{_pct(full['full_best']['val_acc_mean'])}%) | the last trial's accuracy, printed as the best |"
        if full else f"| best pair (06) | {_point(g['best'], names)} | the last trial's accuracy, printed as the best |",
    ]
    if photo:
        pw = photo.get("wilson", {})
        rows.append(f"| phone-photo-like digits vs clean renderings of the same {photo['n']:,} test digits (a random "
                    f"sample) [95% interval]; McNemar: digits only the clean rendering reads vs only the photo | "
                    f"photos {_pct(photo['photo'])}%{_interval(pw.get('photo'))}, clean {_pct(photo['clean'])}%"
                    f"{_interval(pw.get('clean'))}; {_mcnemar(photo.get('mcnemar'))} | — |")
    total = sum(_duration(paths.NOTEBOOKS / f"{n}.ipynb") or 0 for n in notebooks.ORDER)
    rows.append(f"| `make reproduce`, 01 → 07, from scratch | {_minutes(total)} on the machine of the committed run "
                f"({_run_day(paths.NOTEBOOKS / '01_data.ipynb')}; per notebook under Speed) | — |")
    fulls = _full_runs()
    if fulls:
        rows.append(f"| `make reproduce-full`, 04–06 at the full budget, {fulls['seeds']} seeds | "
                    f"{_minutes(fulls['seconds'])}, {fulls['trained']} of {fulls['tasks']} tasks trained in that run | — |")
    return "\n".join(rows) + "\n"


def _full_runs() -> dict | None:
    """The committed full-budget run: its notebooks' durations and what their studies trained."""
    found = []
    for name in notebooks.STUDIES:
        nb, rec = paths.figures_dir() / "full" / f"{name}.ipynb", paths.figures_dir() / "full" / f"{name}.json"
        if not (nb.exists() and rec.exists()):
            return None
        r = json.loads(rec.read_text())
        found.append({"name": name, "seconds": _duration(nb) or 0, "trained": r.get("trained_this_run"),
                      "tasks": r.get("tasks"), "seeds": len(r["parameters"]["rounds"][0]["seeds"])})
    if any(f["trained"] is None for f in found):
        return None
    return {"seconds": sum(f["seconds"] for f in found), "trained": sum(f["trained"] for f in found),
            "tasks": sum(f["tasks"] for f in found), "seeds": found[0]["seeds"], "per_notebook": found}


def _rho(r: float | None, c: dict | None) -> str:
    if r is None:
        return "—"
    return f"{r:.2f}" + (f" (noise ceiling {c['mean']:.2f}, {c['min']:.2f} to {c['max']:.2f})" if c else "")


def studies() -> str:
    rows = ["| study | default budget: seeds, points | Spearman ρ vs full, all points | over the full budget's best ten |"
            " its best point | that point at the full budget | full-budget best |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for name in notebooks.STUDIES[1:] + notebooks.STUDIES[:1]:  # 04, 05, 06
        r = _json(f"{name}.json")
        names = list(r["parameters"]["grid"])
        f = r.get("against_full") or {}
        b = r["best"]
        seeds = r["parameters"]["rounds"][0]["seeds"]
        top = _rho(f.get("spearman_top"), f.get("ceiling_top")) if f.get("n_top", 0) < f.get("n_points", 0) else "(all points)"
        rows.append(f"| {name} | {len(seeds)} seeds, {len(r['rows'])} points | {_rho(f.get('spearman'), f.get('ceiling'))} | {top} "
                    f"| {_point(b, names)}: {_spread(b['val_acc_mean'], b['val_acc_std'], b['n_seeds'])} "
                    f"| {_pct(f.get('pick_full_mean'))}% ({'within' if f.get('within_noise') else 'outside'} noise of the full best) "
                    f"| {_point(f['full_best'], names)}: {_pct(f['full_best']['val_acc_mean'])}% |" if f else
                    f"| {name} | {len(seeds)} seeds | — | — | {_point(b, names)} | — | — |")
    return "\n".join(rows) + "\n"


def recipes() -> str:
    path = paths.figures_dir() / "full" / "06_recipes.json"
    if not path.exists():
        return "No committed recipe comparison: run `make compare-recipes`.\n"
    from . import final

    c = final.load_comparison()
    rows = ["| recipe | validation, mean ± std over seeds | one seed: s on one core (s of the machine) |",
            "| --- | --- | --- |"]
    for r in c["rows"]:
        chosen = r["recipe"] == c["chosen"]
        mark = "**" if chosen else ""
        rows.append(f"| {mark}{r['recipe']}{mark}{' (chosen)' if chosen else ''} | "
                    f"{mark}{_spread(r['val_acc_mean'], r['val_acc_std'], r['n_seeds'])}{mark} | "
                    f"{r['seconds_per_seed']:.0f} ({r['machine_seconds_per_seed']:.0f}) |")
    return "\n".join(rows) + "\n"


def speed() -> str:
    rows = ["| notebook | `make reproduce` (default budget) | `make reproduce-full` |", "| --- | --- | --- |"]
    fulls = _full_runs() or {"per_notebook": []}
    per_full = {f["name"]: f for f in fulls["per_notebook"]}
    for name in notebooks.ORDER:
        d = _duration(paths.NOTEBOOKS / f"{name}.ipynb")
        f = per_full.get(name)
        rows.append(f"| {name} | {_minutes(d) if d else '—'} | "
                    + (f"{_minutes(f['seconds'])} ({f['trained']} of {f['tasks']} tasks trained)" if f else "—") + " |")
    total = sum(_duration(paths.NOTEBOOKS / f"{n}.ipynb") or 0 for n in notebooks.ORDER)
    rows.append(f"| **total** | **{_minutes(total)}** | " + (f"**{_minutes(fulls['seconds'])}**" if per_full else "—") + " |")
    return "\n".join(rows) + "\n"


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
            names = list(record["parameters"]["grid"])
            out.append({"result": label, "point": _point(value, names), "mean": value["val_acc_mean"], "std": std})
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
        return "No earlier run on another machine is recorded (`python -m helpers.readme snapshot REV --cpu NAME`).\n"
    before = json.loads(path.read_text())
    now = _key_values(_json)
    cpu_now = _json("07_test_eval.json")["versions"].get("cpu", "this machine")
    p = before["parameters"]
    rows = [f"| result | committed run ({cpu_now}, {_run_day(paths.NOTEBOOKS / '07_test_eval.ipynb')}) | "
            f"commit {p['commit']} ({p['cpu']}, {p['day']}) |", "| --- | --- | --- |"]
    for a, b in zip(now, before["results"]):
        def cell(v):
            return (f"{v['point']}: " if "point" in v else "") + f"{_pct(v['mean'])}%" + (
                f" ± {_pct(v['std'])}" if v["std"] is not None else "")
        rows.append(f"| {a['result']} | {cell(a)} | {cell(b)} |")
    return "\n".join(rows) + "\n"


RENDERERS = {"results": results, "studies": studies, "recipes": recipes, "speed": speed, "machines": machines}


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
