"""Run the numbered notebooks headlessly with papermill: `make reproduce`, `reproduce-full`, tests.

    python -m helpers.notebooks run [NAME ...]   # default parameters, written back in place
    python -m helpers.notebooks full [--seeds 0 1 2]  # 04-06 at the seed's budget -> figures/full/
    python -m helpers.notebooks smoke [--keep DIR]    # small parameters, into a temporary folder
    python -m helpers.notebooks nbval            # nbval on the committed notebooks, in a temporary folder,
                                                 # then their fresh JSON against the committed JSON

Each notebook is executed into a temporary file and moved over its real name only when it ran to
the end, so a failed run never leaves a half-executed notebook under its real name. `smoke` and
`nbval` write nothing into the checkout: data, figures and studies go to a temporary folder (the
committed full-budget results are copied there, so the studies can compare with them).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import paths, store

ORDER = ["01_data", "02_model", "03_training", "04_lr_sweep", "05_batch_sweep",
         "06_grid_search", "07_test_eval"]
# The full budget runs 06 first: its grid holds most of 04's and 05's points (one study holds
# all three, see studies.VARIED), and in 06 each batch size's points train together as one stack, where
# 05 alone would train its batch-8 point by itself, the slowest model-epoch of all.
STUDIES = ["06_grid_search", "04_lr_sweep", "05_batch_sweep"]
# nbval checks the printed facts; this test checks the results the re-executed notebooks saved,
# read from the folder this variable names (it skips itself when the variable is not set).
FRESH_TEST = paths.ROOT / "tests" / "test_fresh_results.py"
FRESH_FIGURES_ENV = "DIGITS_FRESH_FIGURES"

# Small enough to run all seven in a couple of minutes; each still goes through every cell.
SMOKE_PARAMETERS = {
    "01_data": {"max_samples": 6000},
    "02_model": {},
    "03_training": {"epochs": 1, "batch_size": 256},
    "04_lr_sweep": {"epochs": 1, "fraction": 0.5, "learning_rates": [0.01, 0.1], "seeds": [0, 1], "workers": 2},
    "05_batch_sweep": {"epochs": 1, "fraction": 0.5, "batch_sizes": [64, 256], "seeds": [0, 1], "workers": 2},
    "06_grid_search": {"epochs": 1, "fraction": 0.5, "learning_rates": [0.01, 0.1], "batch_sizes": [64, 128],
                       "seeds": [0, 1], "final_epochs": 1,
                       "final_seeds": [0, 1], "workers": 2},
    "07_test_eval": {"rendered_digits": 20, "photo_digits": 40},
}


def execute(name: str, output: Path, parameters: dict | None = None) -> float:
    """Execute notebooks/<name>.ipynb into `output` (atomically); return the seconds it took."""
    import papermill as pm
    from traitlets.config import Config

    os.environ["DIGITS_HEADLESS"] = "1"  # the kernel inherits it: log lines, not widgets
    source = paths.NOTEBOOKS / f"{name}.ipynb"
    start = time.perf_counter()
    # The kernel is reached over IPC sockets, not TCP: no open port, and no warning about one. The
    # sockets go to a private folder (by default they land in the kernel's cwd, the checkout).
    with store.atomic_path(output) as tmp, tempfile.TemporaryDirectory(prefix="digits-kernel-") as sockets:
        # papermill infers the format from the extension; the temporary name ends in .part
        nb_tmp = tmp.with_suffix(".ipynb")
        try:
            pm.execute_notebook(str(source), str(nb_tmp), parameters=parameters or {},
                                kernel_name="python3", cwd=str(paths.NOTEBOOKS),
                                progress_bar=False, log_output=True, stdout_file=None,
                                config=Config(KernelManager={"transport": "ipc", "ip": f"{sockets}/kernel"}))
            os.replace(nb_tmp, tmp)
        finally:
            nb_tmp.unlink(missing_ok=True)
    return time.perf_counter() - start


def recorded_seconds(notebook: Path) -> float | None:
    """The execution time papermill recorded in a notebook's metadata."""
    meta = json.loads(notebook.read_text()).get("metadata", {}).get("papermill", {})
    return meta.get("duration")


def private_folders(folder: Path) -> None:
    """Send data/ and figures/ to `folder` for this process and its kernels, like a fresh clone.

    The committed full-budget results go along (the studies compare with them), and so do the
    MNIST archives already fetched, read in place rather than fetched again.
    """
    os.environ["DIGITS_DATA_DIR"] = str(folder / "data")
    os.environ["DIGITS_FIGURES_DIR"] = str(folder / "figures")
    committed_full = paths.ROOT / "figures" / "full"
    if committed_full.is_dir():
        shutil.copytree(committed_full, folder / "figures" / "full", dirs_exist_ok=True)
    raw = paths.ROOT / "data" / "raw"
    if not os.environ.get("MNIST_DATA_DIR") and not os.environ.get("MNIST_MIRROR") and raw.is_dir():
        os.environ["MNIST_DATA_DIR"] = str(raw)


def nbval_commands(folder: Path, pytest_args: list[str]) -> list[tuple[list[str], dict]]:
    """The two pytest runs of `nbval`, in order, each with its environment: the committed notebooks
    re-executed under nbval, then the fresh-vs-committed results test on what they wrote in `folder`.
    Extra pytest arguments go to both (so `-- --collect-only` checks that both collect)."""
    pytest = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q"]
    nbval = [*pytest, "--nbval-lax", "--nbval-sanitize-with", str(paths.NOTEBOOKS / "nbval_sanitize.cfg"),
             *[str(paths.NOTEBOOKS / f"{n}.ipynb") for n in ORDER], *pytest_args]
    results = [*pytest, str(FRESH_TEST), *pytest_args]
    return [(nbval, dict(os.environ)),
            (results, dict(os.environ) | {FRESH_FIGURES_ENV: str(folder / "figures")})]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="execute notebooks with default parameters, in place")
    run.add_argument("names", nargs="*", default=ORDER, help="notebooks to run (default: all, in order)")
    full = sub.add_parser("full", help="04-06 at the seed's budget; results and executed copies in figures/full/")
    full.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds per point (default: 0 1 2)")
    smoke = sub.add_parser("smoke", help="execute all notebooks with small parameters in a temporary folder")
    smoke.add_argument("--keep", type=Path, help="run in this folder and keep it")
    nbval = sub.add_parser("nbval", help="nbval on the committed notebooks, in a temporary folder, "
                           "then their fresh results against the committed ones")
    nbval.add_argument("pytest_args", nargs="*", help="extra pytest arguments (for both runs)")
    args = parser.parse_args(argv)

    if args.command == "run":
        unknown = [n for n in args.names if n not in ORDER]
        if unknown:
            parser.error(f"unknown notebooks {unknown}; choose from {ORDER}")
        total = 0.0
        for name in args.names:
            seconds = execute(name, paths.NOTEBOOKS / f"{name}.ipynb")
            total += seconds
            print(f"{name}: {seconds:.1f} s", flush=True)
        print(f"total: {total:.1f} s")
        return 0

    if args.command == "full":
        if not paths.prepared_path().exists():
            print("no prepared data yet: running 01_data first", flush=True)
            execute("01_data", paths.NOTEBOOKS / "01_data.ipynb")
        total = 0.0
        for name in STUDIES:
            out = paths.figures_dir() / "full" / f"{name}.ipynb"
            seconds = execute(name, out, {"budget": "full", "seeds": args.seeds})
            total += seconds
            print(f"{name} (full budget, seeds {args.seeds}): {seconds:.1f} s -> {paths.show(out)}", flush=True)
        print(f"total: {total:.1f} s")
        return 0

    keep = getattr(args, "keep", None)  # smoke only
    folder = keep or Path(tempfile.mkdtemp(prefix=f"digits-{args.command}-"))
    private_folders(folder)
    try:
        if args.command == "nbval":
            os.environ["DIGITS_HEADLESS"] = "1"
            for cmd, env in nbval_commands(folder, args.pytest_args):
                rc = subprocess.call(cmd, cwd=paths.ROOT, env=env)
                if rc:
                    return rc
            return 0
        for name in ORDER:
            seconds = execute(name, folder / "notebooks" / f"{name}.ipynb", SMOKE_PARAMETERS[name])
            print(f"smoke {name}: {seconds:.1f} s", flush=True)
        print("smoke run passed" + (f"; its notebooks, data and figures are in {folder}" if keep else ""))
        return 0
    finally:
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
