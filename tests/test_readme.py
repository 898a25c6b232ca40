"""The README's numbers are the committed results: rendered from figures/ and the notebooks, never typed."""
from __future__ import annotations

import json
import shutil

import pytest

from helpers import paths, readme


def test_committed_readme_is_what_the_committed_results_render(monkeypatch):
    monkeypatch.setenv("DIGITS_FIGURES_DIR", str(paths.ROOT / "figures"))
    text = (paths.ROOT / "README.md").read_text()
    blocks = [m["name"] for m in readme.BLOCK.finditer(text)]
    assert set(blocks) == set(readme.RENDERERS), blocks
    assert readme.render(text) == text, "README.md is out of date: run `python -m helpers.readme`"


def test_a_changed_result_changes_the_readme(tmp_path, monkeypatch):
    """The check can fail: one accuracy changed in a record shows up in the rendered README."""
    shutil.copytree(paths.ROOT / "figures", tmp_path / "figures")
    record = tmp_path / "figures" / "07_test_eval.json"
    data = json.loads(record.read_text())
    data["test_accuracy_mean"] -= 0.01
    record.write_text(json.dumps(data))
    text = (paths.ROOT / "README.md").read_text()
    monkeypatch.setenv("DIGITS_FIGURES_DIR", str(tmp_path / "figures"))
    changed = readme.render(text)
    assert changed != text
    assert f"{100 * data['test_accuracy_mean']:.2f}%" in changed


def test_an_unknown_block_is_an_error():
    with pytest.raises(KeyError, match="no renderer"):
        readme.render("<!-- rendered: nonsense -->\nold\n<!-- /rendered: nonsense -->\n")


def test_the_backward_verdict_follows_the_bench(tmp_path, monkeypatch):
    """The hand-written backward stays only while autograd is more than 1.2x slower somewhere."""
    shutil.copytree(paths.ROOT / "figures", tmp_path / "figures")
    record = tmp_path / "figures" / "bench_stacked.json"
    data = json.loads(record.read_text())
    monkeypatch.setenv("DIGITS_FIGURES_DIR", str(tmp_path / "figures"))
    for row in data["rows"]:
        row["autograd_s"] = 1.1 * row["stacked_s"]
    record.write_text(json.dumps(data))
    assert "within 1.2× of the hand-written backward at every batch size" in readme.backward()
    data["rows"][0]["autograd_s"] = 1.5 * data["rows"][0]["stacked_s"]
    record.write_text(json.dumps(data))
    assert f"1.5× as long at batch {data['rows'][0]['batch_size']}" in readme.backward()
    assert "hand-written backward stays" in readme.backward()
