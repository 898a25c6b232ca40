"""Draw a digit with the mouse in JupyterLab and watch the model read it.

    pad(model, norm)   # in a notebook: the drawing pad, or a printed note in a headless run

`DigitPad` is an anywidget: a canvas in the browser (`draw.js` and `draw.css`, no build step) and
the model in the kernel. When a stroke ends the browser sends the canvas as a PNG data URL; the
kernel reads it exactly like a user's image file (`predict.preprocess`, then `data.normalize`
with the checkpoint's normalization, then the model) and sends back the digit, the ten
probabilities and the 28x28 image the model saw, which the browser draws as a digit and ten bars.
"""
from __future__ import annotations

import base64
import binascii
import io
from pathlib import Path

import anywidget
import torch
import traitlets
from PIL import Image

from . import data, predict
from .model import MLP
from .train import headless

PNG_DATA_URL = "data:image/png;base64,"


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

    # the browser half: a canvas and ten bars (no element ids, as a notebook may show two pads;
    # tests find the data-testid attributes); white ink on black, as MNIST is
    _esm = Path(__file__).with_name("draw.js")
    _css = Path(__file__).with_name("draw.css")
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
