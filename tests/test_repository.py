"""The committed notebooks are what the README promises: all seven, executed, small, parameterized."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from helpers import notebooks, paths


@pytest.mark.parametrize("name", notebooks.ORDER)
def test_committed_notebook_is_executed_small_and_parameterized(name):
    path = paths.NOTEBOOKS / f"{name}.ipynb"
    assert path.stat().st_size < 2_000_000, f"{path.name} is {path.stat().st_size} bytes"
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    first = code[0]
    assert "parameters" in first["metadata"].get("tags", []), "first code cell must be tagged parameters"
    assert all(c.get("execution_count") for c in code), "every code cell has run"
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"{path.name} was committed with an error: {errors[0].get('evalue')}"
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    assert nb["metadata"].get("papermill", {}).get("duration"), "executed by papermill (make reproduce)"


MAX_CODE_LINES = 60   # notebooks narrate; what takes more lines than this belongs in helpers/


@pytest.mark.parametrize("name", notebooks.ORDER)
def test_a_notebook_narrates_with_little_code_and_reads_values_by_name(name):
    nb = json.loads((paths.NOTEBOOKS / f"{name}.ipynb").read_text())
    code = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    lines = [line for cell in code for line in cell.splitlines() if line.strip()]
    assert len(lines) <= MAX_CODE_LINES, f"{name}: {len(lines)} lines of code"
    for line in lines:
        assert not re.search(r"\.__\w+__\(", line), f"{name}: a dunder call: {line}"
        assert not re.search(r"=\s*\w+\.values\(\)\s*$", line), f"{name}: values unpacked by position: {line}"


def test_make_help_lists_the_targets():
    out = subprocess.run(["make", "-s", "help"], cwd=paths.ROOT, capture_output=True, text=True, check=True).stdout
    for target in ("reproduce", "reproduce-full", "test", "bench", "lab", "worker", "env"):
        assert f"make {target} " in out


def test_environment_yml_uses_the_one_dependency_list():
    text = (paths.ROOT / "environment.yml").read_text()
    assert "-e ." in text and "torch" not in text.split("dependencies:")[1].replace("pyproject", "")


def test_nbval_command_collects_every_committed_notebook_in_a_private_folder():
    # `make test-notebooks` as CI runs it, up to collection: the command line and its folders work
    proc = subprocess.run([sys.executable, "-m", "helpers.notebooks", "nbval", "--", "--collect-only", "-q"],
                          cwd=paths.ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    for name in notebooks.ORDER:
        assert f"{name}.ipynb" in proc.stdout


def test_a_notebook_runs_quietly(tmp_path, monkeypatch, capfd):
    # `make reproduce` prints one line per notebook: a silent notebook prints nothing at all
    # (ipykernel warns on stderr of a kernel reached over TCP). Its kernel's IPC sockets are not in
    # its folder, where a killed run would leave them.
    cell = {"cell_type": "code", "id": "silent", "metadata": {"tags": ["parameters"]},
            "source": "import os\nassert not [f for f in os.listdir('.') if f.startswith('kernel')], os.listdir('.')",
            "outputs": [], "execution_count": None}
    nb = {"cells": [cell], "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                         "language": "python"}},
          "nbformat": 4, "nbformat_minor": 5}
    (tmp_path / "silent.ipynb").write_text(json.dumps(nb))
    monkeypatch.setattr(paths, "NOTEBOOKS", tmp_path)
    notebooks.execute("silent", tmp_path / "out.ipynb")
    out, err = capfd.readouterr()
    assert (out + err).strip() == "", out + err
    assert json.loads((tmp_path / "out.ipynb").read_text())["cells"][0]["execution_count"] == 1
    assert sorted(f.name for f in tmp_path.iterdir()) == ["out.ipynb", "silent.ipynb"]
