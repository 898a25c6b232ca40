"""Run the numbered notebooks headlessly with papermill: `make reproduce` and `make smoke`.

    python -m helpers.notebooks run [NAME ...]   # default parameters, written back in place
    python -m helpers.notebooks smoke            # small parameters, into a temporary folder

Each notebook is executed into a temporary file and moved over the committed one only when it
ran to the end, so a failed run never leaves a half-executed notebook under its real name.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from . import paths, store

ORDER = ["01_data", "02_model", "03_training", "04_lr_sweep", "05_batch_sweep",
         "06_grid_search", "07_test_eval"]

# Small enough to run all seven in a couple of minutes; each still goes through every cell.
SMOKE_PARAMETERS = {
    "01_data": {"max_samples": 6000},
    "02_model": {},
    "03_training": {"epochs": 1, "batch_size": 256},
    "04_lr_sweep": {"epochs": 1, "learning_rates": [0.01, 0.1], "workers": 2},
    "05_batch_sweep": {"epochs": 1, "batch_sizes": [64, 256], "workers": 2},
    "06_grid_search": {"epochs": 2, "learning_rates": [0.01, 0.1], "batch_sizes": [64, 128],
                       "final_epochs": 1, "workers": 2},
    "07_test_eval": {"rendered_digits": 20},
}


def execute(name: str, output: Path, parameters: dict | None = None) -> float:
    """Execute notebooks/<name>.ipynb into `output` (atomically); return the seconds it took."""
    import papermill as pm

    os.environ["DIGITS_HEADLESS"] = "1"  # the kernel inherits it: log lines, not widgets
    source = paths.NOTEBOOKS / f"{name}.ipynb"
    start = time.perf_counter()
    with store.atomic_path(output) as tmp:
        # papermill infers the format from the extension; the temporary name ends in .part
        nb_tmp = tmp.with_suffix(".ipynb")
        try:
            pm.execute_notebook(str(source), str(nb_tmp), parameters=parameters or {},
                                kernel_name="python3", cwd=str(paths.NOTEBOOKS),
                                progress_bar=False, log_output=True, stdout_file=None)
            os.replace(nb_tmp, tmp)
        finally:
            nb_tmp.unlink(missing_ok=True)
    return time.perf_counter() - start


def recorded_seconds(notebook: Path) -> float | None:
    """The execution time papermill recorded in a notebook's metadata."""
    meta = json.loads(notebook.read_text()).get("metadata", {}).get("papermill", {})
    return meta.get("duration")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="execute notebooks with default parameters, in place")
    run.add_argument("names", nargs="*", default=ORDER, help="notebooks to run (default: all, in order)")
    smoke = sub.add_parser("smoke", help="execute all notebooks with small parameters in a temporary folder")
    smoke.add_argument("--keep", type=Path, help="run in this folder and keep it")
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

    folder = args.keep or Path(tempfile.mkdtemp(prefix="digits-smoke-"))
    os.environ["DIGITS_DATA_DIR"] = str(folder / "data")
    os.environ["DIGITS_FIGURES_DIR"] = str(folder / "figures")
    if not os.environ.get("MNIST_MIRROR") and not os.environ.get("MNIST_DATA_DIR"):
        # reuse the archives a reproduce already fetched instead of downloading them again
        os.environ["MNIST_DATA_DIR"] = str(paths.ROOT / "data" / "raw")
    for name in ORDER:
        seconds = execute(name, folder / "notebooks" / f"{name}.ipynb", SMOKE_PARAMETERS[name])
        print(f"smoke {name}: {seconds:.1f} s", flush=True)
    if args.keep:
        print(f"smoke run passed; its notebooks, data and figures are in {folder}")
    else:
        shutil.rmtree(folder)
        print("smoke run passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
