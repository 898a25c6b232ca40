"""Draw a digit with the mouse in JupyterLab and watch the model read it.

    pad(model, norm)   # in a notebook: the drawing pad, or a printed note in a headless run

`DigitPad` is an anywidget: a canvas in the browser (inline JavaScript below, no build step) and
the model in the kernel. When a stroke ends the browser sends the canvas as a PNG data URL; the
kernel reads it exactly like a user's image file (`predict.preprocess`, then `data.normalize`
with the checkpoint's normalization, then the model) and sends back the digit, the ten
probabilities and the 28x28 image the model saw, which the browser draws as a digit and ten bars.
"""
from __future__ import annotations

import base64
import binascii
import io

import anywidget
import torch
import traitlets
from PIL import Image

from . import data, predict
from .model import MLP
from .train import headless

PNG_DATA_URL = "data:image/png;base64,"

# The browser half. No element ids (a notebook may show two pads): tests find the data-testid attributes.
# The canvas is white ink on black, as MNIST is; `preprocess` would accept the reverse as well.
_ESM = r"""
const SIZE = 280;   // canvas side, px; preprocess fits any drawing into MNIST's 20x20 box
const PEN = 20;     // stroke width, px: about 2 px at 28x28, MNIST's pen

function element(tag, cls, testid) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (testid) e.dataset.testid = testid;
  return e;
}

function render({ model, el }) {
  const root = element("div", "digit-pad", "digit-pad");
  root.dataset.state = "empty";   // empty | pending (stroke sent) | ready (its answer shown)
  const left = element("div", "digit-pad-left");
  const canvas = element("canvas", "digit-pad-canvas", "digit-canvas");
  canvas.width = canvas.height = SIZE;
  const clear = element("button", "digit-pad-clear jp-mod-styled", "digit-clear");
  clear.textContent = "Clear";
  left.append(canvas, clear);

  const right = element("div", "digit-pad-right");
  const answer = element("div", "digit-pad-answer", "digit-prediction");
  const seenLabel = element("div", "digit-pad-note");
  seenLabel.textContent = "what the model sees (28×28):";
  const seen = element("canvas", "digit-pad-seen", "digit-seen");
  seen.width = seen.height = 28;
  const bars = element("div", "digit-pad-bars", "digit-probabilities");
  const rows = [];
  for (let d = 0; d < 10; d++) {
    const row = element("div", "digit-pad-row", "digit-probability");
    row.dataset.digit = String(d);
    const label = element("span", "digit-pad-label");
    label.textContent = String(d);
    const track = element("span", "digit-pad-track");
    const fill = element("span", "digit-pad-fill");
    track.append(fill);
    const value = element("span", "digit-pad-value");
    row.append(label, track, value);
    bars.append(row);
    rows.push({ row, fill, value });
  }
  const note = element("div", "digit-pad-note", "digit-message");
  right.append(answer, bars, seenLabel, seen, note);

  const style = document.createElement("style");
  style.textContent = `
    .digit-pad { display: flex; gap: 24px; align-items: flex-start; font-family: var(--jp-ui-font-family, sans-serif);
                 color: var(--jp-ui-font-color1, #222); padding: 4px; }
    .digit-pad-left { display: flex; flex-direction: column; gap: 6px; align-items: flex-start; }
    .digit-pad-canvas { width: ${SIZE}px; height: ${SIZE}px; background: #000; cursor: crosshair;
                        touch-action: none; border: 1px solid var(--jp-border-color1, #999); }
    .digit-pad-answer { font-size: 56px; font-weight: 600; line-height: 1; min-height: 56px; }
    .digit-pad-bars { display: grid; gap: 2px; margin: 8px 0; }
    .digit-pad-row { display: grid; grid-template-columns: 1.2em 160px 4.5em; gap: 6px; align-items: center;
                     font-family: var(--jp-code-font-family, monospace); font-size: 12px; }
    .digit-pad-track { height: 10px; background: var(--jp-layout-color2, #eee); }
    .digit-pad-fill { display: block; height: 100%; width: 0; background: var(--jp-brand-color1, #1976d2); }
    .digit-pad-row.best .digit-pad-fill { background: var(--jp-success-color1, #388e3c); }
    .digit-pad-seen { width: 84px; height: 84px; image-rendering: pixelated; background: #000; }
    .digit-pad-note { font-size: 12px; color: var(--jp-ui-font-color2, #666); }`;
  el.append(style, root);
  root.append(left, right);

  const ctx = canvas.getContext("2d");
  function blank() {
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, SIZE, SIZE);
  }
  blank();
  ctx.strokeStyle = ctx.fillStyle = "#fff";
  ctx.lineWidth = PEN;
  ctx.lineCap = ctx.lineJoin = "round";

  let sent = model.get("drawing").id || 0;   // id of the last drawing sent to the kernel
  let last = null;                            // pen position while a stroke is under way
  function at(event) {
    const box = canvas.getBoundingClientRect();
    return [(event.clientX - box.left) * SIZE / box.width, (event.clientY - box.top) * SIZE / box.height];
  }
  function send(png) {
    sent += 1;
    root.dataset.state = png ? "pending" : "empty";
    model.set("drawing", { id: sent, png });
    model.save_changes();
  }
  canvas.addEventListener("pointerdown", (event) => {
    if (event.button !== 0) return;
    event.preventDefault();   // no text selection, no cell drag
    canvas.setPointerCapture(event.pointerId);
    last = at(event);
    ctx.fillStyle = "#fff";
    ctx.beginPath();
    ctx.arc(last[0], last[1], PEN / 2, 0, 2 * Math.PI);
    ctx.fill();
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!last) return;
    const p = at(event);
    ctx.beginPath();
    ctx.moveTo(last[0], last[1]);
    ctx.lineTo(p[0], p[1]);
    ctx.stroke();
    last = p;
  });
  function end() {
    if (!last) return;
    last = null;
    send(canvas.toDataURL("image/png"));
  }
  canvas.addEventListener("pointerup", end);
  canvas.addEventListener("pointercancel", end);
  clear.addEventListener("click", () => { blank(); send(""); });

  const seenCtx = seen.getContext("2d");
  function show() {
    const r = model.get("prediction") || {};
    const probs = r.probabilities || [];
    const ready = r.id === sent && probs.length === 10;
    answer.textContent = ready ? String(r.digit) : "–";
    answer.dataset.digit = ready ? String(r.digit) : "";
    rows.forEach(({ row, fill, value }, d) => {
      const p = ready ? probs[d] : 0;
      row.dataset.probability = ready ? String(p) : "";
      row.classList.toggle("best", ready && d === r.digit);
      fill.style.width = `${(100 * p).toFixed(1)}%`;
      value.textContent = ready ? `${(100 * p).toFixed(1)}%` : "";
    });
    const pixels = ready && r.pixels ? r.pixels : [];
    const img = seenCtx.createImageData(28, 28);
    for (let i = 0; i < 28 * 28; i++) {
      const v = pixels[i] || 0;
      img.data.set([v, v, v, 255], 4 * i);
    }
    seenCtx.putImageData(img, 0, 0);
    note.textContent = r.id === sent ? (r.message || "") : "";
    if (r.id === sent) root.dataset.state = ready ? "ready" : "empty";
    else if (!sent) root.dataset.state = "empty";
  }
  model.on("change:prediction", show);
  show();
  return () => model.off("change:prediction", show);
}

export default { render };
"""


def decode_png(url: str) -> Image.Image:
    """A `data:image/png;base64,...` URL (what a canvas sends) -> the PIL image. Raises ImageError."""
    if not url.startswith(PNG_DATA_URL):
        raise predict.ImageError("drawing", f"not a PNG data URL: {url[:40]!r}")
    try:
        raw = base64.b64decode(url[len(PNG_DATA_URL):], validate=True)
    except (binascii.Error, ValueError) as e:
        raise predict.ImageError("drawing", f"corrupt base64 in the data URL: {e}") from None
    try:
        return Image.open(io.BytesIO(raw))
    except (Image.UnidentifiedImageError, OSError):
        raise predict.ImageError("drawing", "not a readable PNG image") from None


@torch.no_grad()
def read_drawing(image: Image.Image, model: MLP, norm: data.Normalization) -> dict:
    """What the model makes of a drawing, by the same steps as every user image.

    Returns {"digit": int, "probabilities": [10 floats], "pixels": [784 ints, the 28x28 row by
    row]}. Raises predict.ImageError for a blank or unreadable drawing.
    """
    pixels = predict.preprocess(image)                       # uint8 [28, 28], MNIST-style
    x = data.normalize(pixels.unsqueeze(0), norm)            # [1, 784], the training normalization
    proba = model.predict_proba(x.to(next(model.parameters()).device))[0].cpu()
    return {"digit": int(proba.argmax()), "probabilities": proba.tolist(),
            "pixels": pixels.flatten().tolist()}


class DigitPad(anywidget.AnyWidget):
    """A canvas to draw a digit on; the model's reading updates after every stroke.

    `model` and `norm` are what `model.load_checkpoint` returns. The browser writes `drawing`
    ({"id", "png"}); the kernel answers in `prediction` with the same id, plus `digit`,
    `probabilities` (ten floats), `pixels` (the 28x28 input) or a `message` when there is none.
    """

    _esm = _ESM
    drawing = traitlets.Dict({"id": 0, "png": ""}).tag(sync=True)
    prediction = traitlets.Dict({"id": 0}).tag(sync=True)

    def __init__(self, model: MLP, norm: data.Normalization, **kwargs):
        super().__init__(**kwargs)
        self.classifier, self.norm = model, norm

    @traitlets.observe("drawing")
    def _read(self, change: dict) -> None:
        drawing = change["new"]
        answer = {"id": drawing.get("id", 0)}
        if drawing.get("png"):
            try:
                answer.update(read_drawing(decode_png(drawing["png"]), self.classifier, self.norm))
            except predict.ImageError as e:
                answer["message"] = f"nothing to read: {e.problem}"
        self.prediction = answer


def pad(model: MLP, norm: data.Normalization) -> DigitPad | None:
    """The drawing pad in a live notebook; a headless run (papermill, nbval) gets a note instead."""
    if headless():
        print("headless run: the drawing pad needs a live notebook (make lab); skipped")
        return None
    return DigitPad(model, norm)
