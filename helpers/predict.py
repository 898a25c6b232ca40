"""Recognize digits in the user's own images: MNIST-style preprocessing, then the trained model.

`preprocess` turns any PNG or JPEG of one digit into what MNIST is made of: a uint8 28x28 image,
bright ink on a 0 background, the digit scaled to fit 20x20 and centred by its centre of mass.
The result goes through `data.normalize` like every training image, so there is no second path.

    python -m helpers.predict IMAGE [IMAGE ...] [--checkpoint PATH]

prints `path<TAB>digit<TAB>probability` per image; a bad file gets `path: error: ...` on stderr,
the others are still read, and the exit status is 1 if any failed.
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path
from typing import Iterable, NamedTuple

import numpy as np
import torch
from PIL import Image, ImageOps

from . import data, paths
from .model import MLP, CheckpointError, load_checkpoint

# Larger than any scan or phone photo; beyond it a file is a mistake or a decompression bomb.
MAX_SIDE = 10_000
MAX_PIXELS = 50_000_000
BOX, FRAME = 20, 28           # MNIST: the digit fits 20x20, centred by mass in 28x28
BLANK_CONTRAST = 0.1          # ink weaker than this (fraction of full scale) is no digit
CROP_THRESHOLD = 0.2          # bounding box of pixels above this fraction of the strongest ink


class ImageError(ValueError):
    """A file that is not a usable image of a digit; `problem` is the reason without the name."""

    def __init__(self, source: object, problem: str):
        super().__init__(f"{source}: {problem}")
        self.source, self.problem = source, problem


class Prediction(NamedTuple):
    """One image's result: the digit and its probability, or the error that stopped it."""

    path: str
    digit: int | None           # None when `error` says why
    probability: float | None
    error: str | None = None


def _open(image: str | os.PathLike | Image.Image) -> tuple[Image.Image, str]:
    """The fully decoded image and a name for messages; every failure becomes an ImageError."""
    in_memory = isinstance(image, Image.Image)
    name = (getattr(image, "filename", "") or "<image>") if in_memory else str(image)
    try:
        if in_memory:
            image.load()
            return image, name
        if os.path.isfile(image) and os.path.getsize(image) == 0:
            raise ImageError(name, "empty file (0 bytes)")
        # Pillow refuses images over twice its pixel limit but only warns between: refuse those too.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(image) as img:
                w, h = img.size
                if w < 1 or h < 1 or w > MAX_SIDE or h > MAX_SIDE or w * h > MAX_PIXELS:
                    raise ImageError(name, f"absurd image size {w}x{h} (limit {MAX_SIDE} px a side, "
                                           f"{MAX_PIXELS:,} pixels)")
                img.load()  # decode now, inside the try, so a truncated file is caught here
                # Phone photos store their rotation in EXIF; without this a digit can arrive on its side.
                return ImageOps.exif_transpose(img), name
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError(name, "no such file") from None
    except IsADirectoryError:
        raise ImageError(name, "is a directory, not an image") from None
    except PermissionError:
        raise ImageError(name, "permission denied") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(name, f"image too large, refused as a possible decompression bomb ({e})") from None
    except Image.UnidentifiedImageError:
        raise ImageError(name, "not an image (unknown format or corrupt header)") from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as e:
        raise ImageError(name, f"unreadable image (truncated or corrupt): {e}") from None


def _gray(img: Image.Image) -> np.ndarray:
    """float32 luminance in [0, 1], transparency composited onto a backdrop that shows the ink."""
    if img.mode.startswith("I") or img.mode == "F":
        a = np.asarray(img, dtype=np.float32)
        # I;16 is 0..65535; a 32-bit mode-I image may hold 16-bit or 8-bit values: go by its range.
        full = 65535.0 if img.mode.startswith("I;16") or (img.mode == "I" and a.max() > 255) else 255.0
        return np.clip(a / full, 0, 1)
    if img.mode not in ("RGBA", "LA", "PA") and "transparency" not in img.info:
        return np.asarray(img.convert("L"), dtype=np.float32) / 255.0
    rgba = np.asarray(img.convert("RGBA"), dtype=np.float32) / 255.0
    gray, alpha = rgba[..., :3] @ np.array([0.299, 0.587, 0.114], np.float32), rgba[..., 3]
    # Transparent pixels usually store black, so read naively the background is ink too. The
    # transparent part is background: put it behind the drawn part in the opposite shade (white
    # behind dark ink, black behind light ink), so the two stay apart.
    drawn = gray[alpha >= 0.5] if (alpha >= 0.5).any() else gray[alpha > 0]
    backdrop = 1.0 if drawn.size == 0 or np.median(drawn) < 0.5 else 0.0
    return gray * alpha + backdrop * (1.0 - alpha)


def _ink(gray: np.ndarray) -> np.ndarray | None:
    """Ink bright on 0, in [0, 1], paper level removed; None when there is no ink at all."""
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    paper = float(np.median(border))
    if paper > 0.5:  # a light background: dark ink, so invert as MNIST has light ink on black
        gray, paper = 1.0 - gray, 1.0 - paper
    ink = np.clip(gray - paper, 0, None)  # grey paper (a photo, a scan) becomes 0
    if ink.max() < BLANK_CONTRAST:
        return None
    return ink / ink.max()


def preprocess(image: str | os.PathLike | Image.Image) -> torch.Tensor:
    """An image of one digit (path or PIL image) -> uint8 [28, 28], MNIST-style. Raises ImageError."""
    img, name = _open(image)
    ink = _ink(_gray(img))
    if ink is None:
        raise ImageError(name, "blank image: no digit found (no ink distinguishable from the background)")
    ys, xs = np.nonzero(ink > CROP_THRESHOLD)  # ignores faint noise, JPEG fringes, paper texture
    ink = ink[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    ink[ink < CROP_THRESHOLD / 2] = 0
    h, w = ink.shape
    scale = BOX / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    # LANCZOS on float pixels: anti-aliased like NIST's downscale, no uint8 rounding on the way.
    small = np.asarray(Image.fromarray(ink.astype(np.float32)).resize(size, Image.LANCZOS))
    small = np.clip(small, 0, None)
    small = np.round(255.0 * small / small.max()).astype(np.uint8)
    return _centre(small)


def _centre(patch: np.ndarray) -> torch.Tensor:
    """Paste `patch` into 28x28 so its centre of mass lands on (14, 14), clipped to the frame."""
    mass = patch.astype(np.float64)
    total = mass.sum()
    cy = (mass.sum(1) * np.arange(patch.shape[0])).sum() / total
    cx = (mass.sum(0) * np.arange(patch.shape[1])).sum() / total
    top, left = int(round(FRAME / 2 - cy)), int(round(FRAME / 2 - cx))
    out = np.zeros((FRAME, FRAME), np.uint8)
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + patch.shape[0], FRAME), min(left + patch.shape[1], FRAME)
    out[y0:y1, x0:x1] = patch[y0 - top:y1 - top, x0 - left:x1 - left]
    return torch.from_numpy(out)


def render_digit(img28: torch.Tensor, size: int, offset: tuple[int, int], canvas: int,
                 invert: bool = True) -> Image.Image:
    """Draw an MNIST digit as a user's scan would show it: an RGB `canvas`x`canvas` image.

    The digit is upscaled (bicubic) to `size`x`size` px and placed with its top-left corner at
    `offset` = (x, y). `invert`: black ink on white paper; otherwise white on black, as in MNIST.
    """
    x, y = offset
    if not (0 <= x and 0 <= y and x + size <= canvas and y + size <= canvas):
        raise ValueError(f"a {size}px digit at {offset} does not fit a {canvas}px canvas")
    digit = Image.fromarray(np.asarray(img28, dtype=np.uint8)).resize((size, size), Image.BICUBIC)
    if invert:
        digit = Image.fromarray(255 - np.asarray(digit))
    page = Image.new("RGB", (canvas, canvas), "white" if invert else "black")
    page.paste(digit.convert("RGB"), (x, y))
    return page


def default_checkpoint() -> Path:
    """The final model notebook 06 saves."""
    return paths.data_dir() / "model.pt"


def predict_images(images: Iterable[str | os.PathLike | Image.Image],
                   checkpoint: str | os.PathLike | None = None, model: MLP | None = None,
                   norm: data.Normalization | None = None) -> list[Prediction]:
    """One Prediction per image, in order; a bad image gets its error, the others still run.

    `model` (with `norm`, default MNIST's) is used as given; else the checkpoint is loaded once.
    """
    if model is None:
        checkpoint = Path(checkpoint) if checkpoint is not None else default_checkpoint()
        if not checkpoint.is_file():
            raise CheckpointError(f"{checkpoint}: no such checkpoint; run `make reproduce` "
                                  "(notebook 06 saves the final model) or pass --checkpoint PATH")
        model, norm, _ = load_checkpoint(checkpoint)
    norm = norm or data.Normalization()
    results: list[Prediction | None] = []
    good: list[tuple[int, torch.Tensor]] = []
    for i, image in enumerate(images):
        name = str(image) if not isinstance(image, Image.Image) else _open(image)[1]
        try:
            good.append((i, preprocess(image)))
            results.append(Prediction(name, None, None))
        except ImageError as e:
            results.append(Prediction(name, None, None, e.problem))
    if good:  # one forward pass for all readable images, through the training normalization
        x = data.normalize(torch.stack([t for _, t in good]), norm)
        proba = model.predict_proba(x.to(next(model.parameters()).device)).cpu()
        p, digit = proba.max(dim=1)
        for (i, _), d, q in zip(good, digit.tolist(), p.tolist()):
            results[i] = results[i]._replace(digit=d, probability=q)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.predict",
                                     description="Recognize the digit in each image (PNG, JPEG, ...).")
    parser.add_argument("images", nargs="+", metavar="IMAGE")
    parser.add_argument("--checkpoint", metavar="PATH",
                        help=f"model checkpoint (default: {paths.show(default_checkpoint())})")
    args = parser.parse_args(argv)
    try:
        predictions = predict_images(args.images, checkpoint=args.checkpoint)
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for p in predictions:
        if p.error is None:
            print(f"{p.path}\t{p.digit}\t{p.probability:.4f}")
        else:
            print(f"{p.path}: error: {p.error}", file=sys.stderr)
    return 1 if any(p.error for p in predictions) else 0


if __name__ == "__main__":
    sys.exit(main())
