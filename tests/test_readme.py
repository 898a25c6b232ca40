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
    """The hand-written backward stays while autograd's best time is over 1.2x at some batch size,
    and the README says when single rounds reach the threshold."""
    shutil.copytree(paths.ROOT / "figures", tmp_path / "figures")
    record = tmp_path / "figures" / "bench_stacked.json"
    data = json.loads(record.read_text())
    monkeypatch.setenv("DIGITS_FIGURES_DIR", str(tmp_path / "figures"))
    for row in data["rows"]:
        row["autograd_s"], row["autograd_ratio_by_round"] = 1.1 * row["stacked_s"], [1.1, 1.3]
    record.write_text(json.dumps(data))
    assert "within 1.2× of the hand-written backward at every batch size" in readme.backward()
    first = data["rows"][0]
    first["autograd_s"], first["autograd_ratio_by_round"] = 1.5 * first["stacked_s"], [1.5, 1.6]
    record.write_text(json.dumps(data))
    text = readme.backward()
    assert f"1.50× as long at batch {first['batch_size']}" in text and "hand-written backward stays" in text
    assert "1.50× (1.50–1.60×)" in text and "measure again" not in text
    first["autograd_ratio_by_round"] = [1.15, 1.6]
    record.write_text(json.dumps(data))
    assert f"Single rounds at batch {first['batch_size']} reach 1.2× or below" in readme.backward()
