"""The notebooks in JupyterLab, in a real browser: each runs without an error, and 07's drawing pad
reads a digit drawn with the mouse.

One JupyterLab server (tests/lab.py) serves copies of the notebooks with SMOKE_PARAMETERS injected,
from a temporary folder; Debian's Chromium, through Playwright, opens them and runs all cells.
On a failure the message names a screenshot, the server log and the browser console log, all under
pytest's temporary folder. Four to six minutes on 2 cores, nearly all of it the notebooks themselves.
"""
from __future__ import annotations

import base64
import io
import json
import math
import os

import nbformat
import pytest
import torch

from helpers import notebooks

try:  # tests/ as a package or as a plain folder on sys.path
    from . import lab as L
except ImportError:
    import lab as L

pytestmark = pytest.mark.browser

PAD = '[data-testid="digit-pad"]'


@pytest.fixture(scope="module")
def jlab(tmp_path_factory):
    """A JupyterLab server and a Chromium page on it, for the whole module; always shut down."""
    executable = L.chromium()
    if executable is None:
        reason = "Debian's chromium is not installed (apt-get install chromium); .ci/run installs it"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    base = tmp_path_factory.mktemp("lab")
    server = L.LabServer(base)
    L.prepare_notebooks(server.root / "notebooks")
    with server, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, headless=True, args=L.CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(60_000)
            driver = L.LabPage(page, server, base)
            driver.load()
            yield driver
            driver.close_notebook()
        finally:
            browser.close()


def png_data_url(image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def test_the_pad_reads_a_drawing_as_every_user_image_is_read(capsys):
    """The kernel half, without a browser: the canvas PNG goes through predict's preprocessing."""
    from PIL import Image, ImageDraw

    from helpers import data, draw, predict
    from helpers.model import MLP

    torch.manual_seed(0)
    model, norm = MLP(hidden=(32,), dropout=(0.0,)).eval(), data.Normalization()
    canvas = Image.new("RGBA", (280, 280), "black")   # what the browser sends: white ink on black
    ImageDraw.Draw(canvas).line([(60, 60), (220, 60), (120, 240)], fill="white", width=20)
    pad = draw.DigitPad(model, norm)
    pad.drawing = {"id": 1, "png": png_data_url(canvas)}
    answer = pad.prediction
    expected = predict.predict_images([canvas.copy()], model=model, norm=norm)[0]
    assert answer["id"] == 1 and answer["digit"] == expected.digit
    assert math.isclose(answer["probabilities"][expected.digit], expected.probability, rel_tol=1e-6)
    assert math.isclose(sum(answer["probabilities"]), 1.0, abs_tol=1e-5)
    assert answer["pixels"] == predict.preprocess(canvas.copy()).flatten().tolist()

    pad.drawing = {"id": 2, "png": png_data_url(Image.new("RGBA", (280, 280), "black"))}
    assert pad.prediction["id"] == 2 and "blank" in pad.prediction["message"]
    pad.drawing = {"id": 3, "png": "data:image/png;base64,bm90IGEgcG5n"}
    assert pad.prediction == {"id": 3, "message": "nothing to read: not a readable PNG image"}
    pad.drawing = {"id": 4, "png": ""}   # Clear
    assert pad.prediction == {"id": 4}

    assert draw.pad(model, norm) is None   # tests run headless: a note instead of the pad
    assert "headless run" in capsys.readouterr().out


def describe(run: L.Run) -> str:
    problems = run.errors + [f"cell {i} never ran" for i in run.unrun]
    if not run.completed and not problems:
        problems = ["JupyterLab's run-all did not report success"]
    return f"{run.name} in JupyterLab ({run.seconds:.0f} s): " + "; ".join(problems)


def test_a_failing_cell_is_caught(jlab):
    """The check below can fail: a traceback is found, a stderr warning is not taken for one."""
    kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": kernelspec}, cells=[
        nbformat.v4.new_code_cell("import sys\nprint('only a warning', file=sys.stderr)"),
        nbformat.v4.new_code_cell("1 / 0"),
        nbformat.v4.new_code_cell("print('never reached')"),
    ])
    nbformat.write(nb, jlab.server.root / "fails.ipynb")
    run = jlab.run("fails.ipynb", timeout_s=120)
    assert not run.ok and not run.completed, f"a failing notebook passed the check; {jlab.evidence('fails')}"
    assert run.errors == ["cell 1: ZeroDivisionError: division by zero"], f"{run}; {jlab.evidence('fails')}"
    assert run.unrun == [2] and run.stderr == 1, f"{run}; {jlab.evidence('fails')}"


@pytest.mark.parametrize("name", notebooks.ORDER)
def test_notebook_runs_in_jupyterlab_without_error(jlab, name):
    run, needs = jlab.run_notebook(name)
    for need in needs:
        assert need.ok, f"{need.name}, which {name} needs, failed: {describe(need)}"
    assert run.ok, f"{describe(run)}; {jlab.evidence(name)}"


def test_draw_a_one_and_read_the_prediction(jlab):
    """A vertical stroke with real mouse events is read as a 1; ten probabilities summing to 1."""
    run, needs = jlab.run_notebook("07_test_eval", keep_open=True)
    for r in [*needs, run]:
        assert r.ok, f"{describe(r)}; {jlab.evidence('draw-' + r.name)}"
    page = jlab.page
    canvas = page.locator('[data-testid="digit-canvas"]')
    try:
        canvas.scroll_into_view_if_needed(timeout=60_000)
        canvas.wait_for(state="visible", timeout=10_000)
    except Exception as e:
        skipped = page.get_by_text("headless run").count() > 0
        pytest.fail(f"no drawing pad in 07 ({type(e).__name__}"
                    + ("; the kernel took itself for headless" if skipped else "")
                    + f"); {jlab.evidence('no-pad')}")
    assert page.get_attribute(PAD, "data-state") == "empty", f"a fresh pad is not empty; {jlab.evidence('pad')}"
    assert page.eval_on_selector(PAD, "e => getComputedStyle(e).display") == "flex", \
        f"the pad's stylesheet (draw.css) is not applied; {jlab.evidence('pad-style')}"

    box = canvas.bounding_box()
    x = box["x"] + 0.5 * box["width"]
    page.mouse.move(x, box["y"] + 0.15 * box["height"])
    page.mouse.down()
    page.mouse.move(x, box["y"] + 0.85 * box["height"], steps=20)
    page.mouse.up()
    try:
        page.wait_for_selector(f'{PAD}[data-state="ready"]', timeout=30_000)
    except Exception:
        pytest.fail(f"the stroke got no prediction (pad state: {page.get_attribute(PAD, 'data-state')}, "
                    f"message: {page.inner_text('[data-testid=digit-message]')!r}); {jlab.evidence('draw')}")

    shown = page.inner_text('[data-testid="digit-prediction"]').strip()
    digit = int(page.get_attribute('[data-testid="digit-prediction"]', "data-digit"))
    rows = page.locator('[data-testid="digit-probability"]')
    probabilities = {int(rows.nth(i).get_attribute("data-digit")): float(rows.nth(i).get_attribute("data-probability"))
                     for i in range(rows.count())}
    artifacts = jlab.artifacts
    page.locator(PAD).screenshot(path=str(artifacts / "digit-pad.png"))
    (artifacts / "drawing.json").write_text(json.dumps({"digit": digit, "probabilities": probabilities}))
    print(f"drawn 1 read as {digit}; probabilities {[round(probabilities[d], 4) for d in range(10)]}")

    def where() -> str:   # only on a failure: it takes a screenshot
        return f"{probabilities}; pad screenshot: {artifacts / 'digit-pad.png'}; {jlab.evidence('draw')}"

    assert sorted(probabilities) == list(range(10)), where()
    assert math.isclose(sum(probabilities.values()), 1.0, abs_tol=1e-4), where()
    assert shown == str(digit) == str(max(probabilities, key=probabilities.get)), where()
    assert digit == 1, f"a drawn 1 read as {digit}: {where()}"

    page.click('[data-testid="digit-clear"]')
    page.wait_for_selector(f'{PAD}[data-state="empty"]', timeout=10_000)
    assert page.get_attribute('[data-testid="digit-prediction"]', "data-digit") == ""
