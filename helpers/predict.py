"""Recognize digits in the user's own images: MNIST-style preprocessing, then the trained model.

`preprocess` turns any PNG or JPEG of one digit into what MNIST is made of: a uint8 28x28 image,
bright ink on a 0 background, the digit scaled to fit 20x20 and centred by its centre of mass.
The result goes through `data.normalize` like every training image, so there is no second path.
Photos work as well as scans: the paper's level is estimated across the image (grey paper,
uneven light, dark corners), the ink is told from it by the image's own noise and contrast, dark
on light or light on dark, and then MNIST's conventions apply as to any image.

    python -m helpers.predict IMAGE [IMAGE ...] [--checkpoint PATH] [--save-inputs DIR]

prints `path<TAB>digit<TAB>probability` per image; a bad file gets `path: error: ...` on stderr,
the others are still read, and the exit status is 1 if any failed. `--save-inputs DIR` also
writes the 28x28 the model saw for each readable image to `DIR/<stem>.png` (`photo.jpg` ->
`photo.png`; a second `photo.jpg` from another folder -> `photo-2.png`, in the order given),
so a wrong answer can be traced to the picture the model was shown.
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
from scipy import ndimage

from . import data, paths, store
from .model import MLP, CheckpointError, load_checkpoint

# Larger than any scan or phone photo; beyond it a file is a mistake or a decompression bomb.
MAX_SIDE = 10_000
MAX_PIXELS = 50_000_000
BOX, FRAME = 20, 28           # MNIST: the digit fits 20x20, centred by mass in 28x28
BLANK_CONTRAST = 0.1          # ink weaker than this (share of the paper's light it takes) is no digit
CROP_THRESHOLD = 0.2          # bounding box of pixels above this fraction of a typical stroke
WORK_SIDE = 1024              # px: larger images are area-averaged down to this longer side first
BACKGROUND_SIDE = 64          # px: the background surface is fitted on a copy this small
BACKGROUND_DEGREE = 4         # its polynomial order (in log light): gradients, vignettes, never strokes
FIT_TOLERANCE = 0.04          # within 4% of the surface's light is paper, however clean the image
                              # (twice that per order below the top: a rough surface needs room)
BACKGROUND_ROUNDS = 8         # refits per order, each to the pixels near the previous surface
SMOOTH_DIVISOR = 100          # smoothing window = shorter side / this (1 px below 150 px)
NOISE_SIGMAS = 5.0            # ink must stand this many noise deviations out of the background
REACH_PERCENT = 0.1           # how far the image reaches each side of the background: its 0.1% tails
LOW_SIGMAS = 3.0              # soft ink edges fade to 0 this many noise deviations above the paper
MIN_LEVEL = 0.05              # darkest paper (or brightest ground) that strengths are divided by
QUANTUM = 1 / 255             # one 8-bit step: the least noise a stored image has
SATURATED = 250 / 255         # this bright or more is overexposed (clipped, then blurred by JPEG)
SPECK_FRACTION = 0.05         # rows/columns with less ink than this share of the fullest are specks
MEDIAN_NOISE = 0.862          # robust spread of (x - its 3x3 median) for white noise of spread 1


class ImageError(ValueError):
    """A file that is not a usable image of a digit; `problem` is the reason without the name."""

    def __init__(self, source: object, problem: str):
        super().__init__(f"{source}: {problem}")
        self.problem = problem


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


def _resize(a: np.ndarray, side: int, method: Image.Resampling) -> np.ndarray:
    """`a` as float32, resized by Pillow's `method` so that its longer side is `side` px."""
    h, w = a.shape
    scale = side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(a.astype(np.float32)).resize(size, method))


def _shrink(a: np.ndarray, side: int) -> np.ndarray:
    """`a` area-averaged so that its longer side is at most `side` px (never enlarged)."""
    return a if max(a.shape) <= side else _resize(a, side, Image.BOX)


def _spread(a: np.ndarray) -> float:
    """Robust standard deviation (from the median absolute deviation): a minority of ink leaves it be."""
    return 1.4826 * float(np.median(np.abs(a - np.median(a))))


def _powers(n: int, degree: int) -> np.ndarray:
    """t^0 .. t^degree at n points spanning [-1, 1]: [n, degree + 1]."""
    return np.linspace(-1, 1, n)[:, None] ** np.arange(degree + 1)


def _background(gray: np.ndarray, paper: np.ndarray, flat: bool = False) -> np.ndarray:
    """The paper (or board) behind the digit, as a smooth surface the shape of `gray`.

    Light multiplies what the paper reflects, so in the logarithm of the image uneven light (a
    gradient from the window, darker corners) adds a smooth surface that a low-order polynomial
    follows and a stroke cannot bend. It is fitted on a small copy, to the pixels close to the
    previous fit only, so the ink is left out whatever its polarity: "close" as the residuals of
    the `paper` pixels (`_paper`) centre and spread, which ink does not sway. The order rises
    one step at a time from a flat level, and "close" narrows as it rises: a surface fitted at
    once can bend into a bold digit, and one that drops a steep corner early never gets it back.
    `flat`: a level only, for paper seen only between strokes (a digit cropped to its ink), where
    a curved fit through the gaps would bend into the strokes.
    """
    small = _shrink(gray, BACKGROUND_SIDE).astype(np.float64)
    known = (_shrink(paper.astype(np.float32), BACKGROUND_SIDE) > 0.5).ravel()  # mostly paper
    values = np.log(np.maximum(small.ravel(), QUANTUM))
    # An overexposed pixel only says the light there is at least white: it may hold the
    # surface up, never pull it down (else the edge of a burnt-out patch looks like ink).
    saturated = small.ravel() >= SATURATED
    top = BACKGROUND_DEGREE if min(small.shape) >= 10 and not flat else 0  # a few pixels cannot carry a surface
    coef = np.zeros((top + 1, top + 1))  # coef[j, i] multiplies y^j x^i
    coef[0, 0] = np.median(values[known])
    fit = np.full_like(values, coef[0, 0])
    for degree in range(1, top + 1):
        powers = [(j, i) for j in range(degree + 1) for i in range(degree + 1 - j)]
        ys, xs = _powers(small.shape[0], degree), _powers(small.shape[1], degree)
        terms = np.stack([np.outer(ys[:, j], xs[:, i]).ravel() for j, i in powers], 1)
        tolerance = FIT_TOLERANCE * 2 ** (top - degree)
        near = None
        for _ in range(BACKGROUND_ROUNDS):
            seen = np.where(saturated, np.maximum(values, fit), values)
            r = seen - fit
            was, near = near, np.abs(r - np.median(r[known])) <= max(3 * _spread(r[known]), tolerance)
            if was is not None and (near == was).all():
                break
            # Least squares by its normal equations: 15 unknowns at most, well scaled on [-1, 1].
            t = terms[near]
            solved = np.linalg.solve(t.T @ t + 1e-9 * np.eye(len(powers)), t.T @ seen[near])
            fit = terms @ solved
            coef[:] = 0
            coef[tuple(zip(*powers))] = solved
    surface = _powers(gray.shape[0], top) @ coef @ _powers(gray.shape[1], top).T
    return np.minimum(np.exp(surface), 1.0).astype(np.float32)  # no image is brighter than white


def _otsu(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold: the cut that best separates `values` into two classes (max between-class variance)."""
    counts, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(counts)
    w1 = w0[-1] - w0
    m0 = np.cumsum(counts * centres)
    between = w0 * w1 * (m0 / np.maximum(w0, 1) - (m0[-1] - m0) / np.maximum(w1, 1)) ** 2
    return float(edges[1:][np.argmax(between)])


def _paper(work: np.ndarray, fine_noise: float | None = None) -> np.ndarray:
    """The pixels to judge the paper by: all of them, or the paper's side of a clear split.

    Estimates made on the whole image are robust to ink while ink is a minority. A digit filling
    its frame leaves ink and its soft edges the majority, and the same estimates then describe
    the ink. So when Otsu's threshold splits the image into two classes further apart than
    NOISE_SIGMAS spreads of the tighter one (noise or uneven light on a blank page splits far
    less clearly), the paper is the class that holds most of the border: a digit reaches the
    border at its extremes only. With `fine_noise` (a crop's noise, see `_measure`), the image may be
    cut to its ink, so that ink holds most of the border too; the paper is then the class the
    border holds more of than the whole image does, and the split is judged by that
    pixel-to-pixel noise, since a class that holds fringes as well as paper spreads far wider
    than noise.
    """
    dark = work < _otsu(work.ravel())
    border = np.concatenate([dark[0], dark[-1], dark[1:-1, 0], dark[1:-1, -1]])
    cropped = fine_noise is not None
    paper = dark if border.mean() > (dark.mean() if cropped else 0.5) else ~dark
    if paper.all() or not paper.any():  # a single level: nothing to split
        return np.ones_like(paper)
    apart = abs(float(np.median(work[paper]) - np.median(work[~paper])))
    spread = fine_noise if cropped else min(_spread(work[paper]), _spread(work[~paper]))
    if apart > NOISE_SIGMAS * max(spread, QUANTUM):
        return paper
    return np.ones_like(paper)


class _Measure(NamedTuple):
    """What `_measure` finds: each pixel's ink strength, the image's contrast and its noise, in the
    same units (shares of the light ink could take)."""

    strength: np.ndarray
    contrast: float
    noise: float

    @property
    def floor(self) -> float:
        """The least strength that is ink: out of the noise, and more than a blank page's shading."""
        return max(NOISE_SIGMAS * self.noise, BLANK_CONTRAST)

    def stands_out(self) -> bool:
        return self.contrast > NOISE_SIGMAS * self.noise and self.strength.max() >= self.floor

    def reaches_all_sides(self) -> bool:
        """Ink on every side of the image, as in a crop to the ink."""
        ink = self.strength >= self.floor
        return bool(ink[0].any() and ink[-1].any() and ink[:, 0].any() and ink[:, -1].any())


def _measure(work: np.ndarray, k: int, cropped: bool = False) -> _Measure:
    """Ink strength against the background fitted to the paper (`_paper`), on whichever side the
    image reaches furthest: dark ink on paper, light ink on a dark ground (a lighter sheet on grey
    paper reaches less far than the strokes on it). `cropped`: read as a crop to the ink, the
    paper from the crop's view, its level flat, the noise from pixel to pixel."""
    # A crop's noise: the spread of each pixel's difference with its 3x3 median, which strokes and
    # fringes (smooth over three pixels) leave be, however much of the image they fill.
    fine = _spread(work - ndimage.median_filter(work, size=3, mode="nearest")) / MEDIAN_NOISE if cropped else None
    paper = _paper(work, fine)
    background = _background(work, paper, flat=cropped)
    # a k x k mean, edges repeated: noise averages out, strokes wider than k stay
    residual = ndimage.uniform_filter(work - background, k, mode="nearest")
    if cropped:
        noise = fine
    else:
        # Burnt-out white has no noise left to measure: measure it where the paper is exposed,
        # unless most of the paper is burnt out (a clean scan on white).
        exposed = paper & (work < SATURATED)
        noise = _spread(residual[exposed] if exposed.sum() > paper.sum() / 2 else residual[paper])
    noise = max(noise, QUANTUM)
    light, dark = np.percentile(residual, [100 - REACH_PERCENT, REACH_PERCENT])
    # Dark ink (and so a blank page): its strength is the share of the paper's light it takes away.
    if -dark >= light:
        strength = -residual / np.maximum(background, MIN_LEVEL)
        scale = max(float(np.median(background)), MIN_LEVEL)
    else:
        strength = residual / np.maximum(1 - background, MIN_LEVEL)
        scale = max(1 - float(np.median(background)), MIN_LEVEL)
    return _Measure(strength, max(light, -dark) / scale, noise / scale)


def _ink(gray: np.ndarray, name: str) -> np.ndarray:
    """Ink bright on 0, in [0, 1], background removed; ImageError (blank) when no ink stands out.

    Strength is measured as a share of what ink could reach there (black on paper, white on a
    dark ground), so a stroke in a shadowed corner counts as much as one in the light. Otsu's
    threshold separates strokes from their fringes, the median stroke becomes full ink, and the
    soft (anti-aliased, blurred) edges between the noise floor and that are kept.

    A digit cropped to its ink leaves paper only between its strokes, and the paper found from
    the border may then be ink and fringes. So when a small image (the size a crop is) shows
    nothing, a second reading (`_measure(cropped=True)`) takes the paper from the crop's view and
    the noise from pixel to pixel; it is believed if its ink reaches all four sides, as a crop's does.
    """
    work = _shrink(gray, WORK_SIDE)
    k = max(1, round(min(work.shape) / SMOOTH_DIVISOR))  # px: smooth no more than a stroke is wide
    m = _measure(work, k)
    if k == 1 and not m.stands_out():
        crop = _measure(work, k, cropped=True)
        if crop.stands_out() and crop.reaches_all_sides():
            m = crop
    if m.contrast < BLANK_CONTRAST:
        raise ImageError(name, f"blank image: no digit found (the strongest contrast with the background is "
                               f"{m.contrast:.1%}, below the {BLANK_CONTRAST:.0%} ink needs; noise {m.noise:.1%})")
    if not m.stands_out():
        # not blank: something differs from the background, but no more than the image's own noise
        raise ImageError(name, f"no digit found: the image has contrast {m.contrast:.1%}, but its noise is "
                               f"{m.noise:.1%} and ink must stand {m.floor:.1%} out of it (a noisy image, or a "
                               f"stroke too thin or faint to tell from the paper)")
    strength, floor = m.strength, m.floor
    cut = max(_otsu(strength[strength > floor / 2]), floor)  # strokes vs their fringes
    level = float(np.median(strength[strength >= cut]))  # a typical stroke: full ink from here up
    low = LOW_SIGMAS * m.noise
    return np.clip((strength - low) / max(level - low, QUANTUM), 0, 1)


def preprocess(image: str | os.PathLike | Image.Image) -> torch.Tensor:
    """An image of one digit (path or PIL image) -> uint8 [28, 28], MNIST-style. Raises ImageError."""
    img, name = _open(image)
    ink = _ink(_gray(img), name)
    inked = ink > CROP_THRESHOLD
    ink = ink[_extent(inked.sum(1)), _extent(inked.sum(0))]
    # LANCZOS on float pixels: anti-aliased like NIST's downscale, no uint8 rounding on the way.
    small = np.clip(_resize(ink, BOX, Image.LANCZOS), 0, None)
    h, w = small.shape
    frame = np.zeros((FRAME, FRAME))
    top, left = (FRAME - h) // 2, (FRAME - w) // 2
    frame[top:top + h, left:left + w] = np.round(255 * small / small.max())
    # then moved by whole pixels so that its centre of mass lands on (14, 14), as MNIST's digits are
    cy, cx = ndimage.center_of_mass(frame)
    frame = ndimage.shift(frame, (round(FRAME / 2 - cy), round(FRAME / 2 - cx)), order=0, mode="grid-constant")
    return torch.from_numpy(frame.astype(np.uint8))


def _extent(profile: np.ndarray) -> slice:
    """The span of rows (or columns) holding ink: a stray speck, far thinner than a stroke, is left out."""
    rows = np.nonzero(profile >= max(1, SPECK_FRACTION * profile.max()))[0]
    return slice(rows.min(), rows.max() + 1)


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


def crop_to_ink(page: Image.Image, level: int = 128, invert: bool = True) -> Image.Image:
    """`page` cut to the bounding box of its pixels darker than `level` (lighter than 255 - `level`
    when not `invert`), as a crop tool that snaps to the digit does: the ink touches every side."""
    a = np.asarray(page.convert("L"))
    box = ndimage.find_objects((a < level if invert else a > 255 - level).astype(np.int8))
    if not box:
        raise ValueError(f"no pixel {'darker' if invert else 'lighter'} than level {level} to crop to")
    return Image.fromarray(a[box[0]])


def default_checkpoint() -> Path:
    """The final model notebook 06 saves."""
    return paths.data_dir() / "model.pt"


def predict_images(images: Iterable[str | os.PathLike | Image.Image],
                   checkpoint: str | os.PathLike | None = None, model: MLP | None = None,
                   norm: data.Normalization | None = None,
                   save_inputs: str | os.PathLike | None = None) -> list[Prediction]:
    """One Prediction per image, in order; a bad image gets its error, the others still run.

    `model` (with `norm`, default MNIST's) is used as given; else the checkpoint is loaded once.
    `save_inputs`: a folder (created if need be) that receives, for each readable image, the
    28x28 the model saw, as a PNG named by `input_files`.
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
    if save_inputs is not None:
        for (_, seen), path in zip(good, input_files(save_inputs, [results[i].path for i, _ in good])):
            with store.atomic_path(path) as tmp:
                Image.fromarray(seen.numpy(), "L").save(tmp, format="PNG")
    if good:  # one forward pass for all readable images, through the training normalization
        x = data.normalize(torch.stack([t for _, t in good]), norm)
        proba = model.predict_proba(x.to(next(model.parameters()).device)).cpu()
        p, digit = proba.max(dim=1)
        for (i, _), d, q in zip(good, digit.tolist(), p.tolist()):
            results[i] = results[i]._replace(digit=d, probability=q)
    return results


def input_files(folder: str | os.PathLike, names: Iterable[str]) -> list[Path]:
    """`folder/<stem>.png` for each image name, in order; a repeated stem gets -2, -3, ...

    Two `digit.jpg` from different folders must not overwrite each other's input. Names are
    compared ignoring case, as macOS and Windows file systems do.
    """
    taken: set[str] = set()
    files = []
    for name in names:
        stem = Path(name).stem.strip("<>") or "image"  # an in-memory image is named "<image>"
        unique, n = stem, 1
        while unique.lower() in taken:
            n += 1
            unique = f"{stem}-{n}"
        taken.add(unique.lower())
        files.append(Path(folder) / f"{unique}.png")
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.predict",
                                     description="Recognize the digit in each image (PNG, JPEG, ...).")
    parser.add_argument("images", nargs="+", metavar="IMAGE")
    parser.add_argument("--checkpoint", metavar="PATH",
                        help=f"model checkpoint (default: {paths.show(default_checkpoint())})")
    parser.add_argument("--save-inputs", metavar="DIR",
                        help="write the 28x28 the model saw for each image to DIR/<name>.png "
                             "(a repeated name gets -2, -3, ...), to see why a digit failed")
    args = parser.parse_args(argv)
    if args.save_inputs is not None:
        try:  # before any work: a folder that cannot be made stops here, named
            Path(args.save_inputs).mkdir(parents=True, exist_ok=True)
        except OSError as e:
            print(f"error: --save-inputs {args.save_inputs}: cannot create the folder ({e.strerror or e})",
                  file=sys.stderr)
            return 1
    try:
        predictions = predict_images(args.images, checkpoint=args.checkpoint, save_inputs=args.save_inputs)
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
