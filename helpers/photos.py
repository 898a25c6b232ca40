"""Photo-like digits: an MNIST digit as a phone photo of it, written on paper, would show it.

A user's photo is not a scan: the paper is grey rather than white, the light falls unevenly
(a gradient from the window, darker corners from the lens), the sensor adds noise, focus is
soft, and the file is a JPEG. `photograph(digit, shot)` draws a 28x28 MNIST digit that way;
`clean(digit, shot)` draws the same digit, same size, place and angle, black on white, so the
two can be compared and any loss put down to the photo's light, noise, blur and compression.
`draw_shot(seed)` picks every setting at random over the ranges below, reproducibly.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from scipy import ndimage

PAPER = (0.3, 0.9)          # mean paper luminance over the frame (0 black, 1 white)
CONTRAST = (0.45, 0.9)      # ink darkness relative to the paper: ink = paper * (1 - contrast)
FRACTION = (0.40, 0.75)     # the digit's longer side / the frame's shorter side
SHORT_SIDE = (64, 400)      # px, the frame's shorter side; the longer one is up to 4/3 of it
GRADIENT = 0.2              # up to this change of light per half frame, in x and y (fraction of mean)
VIGNETTE = (0.0, 0.3)       # corners get 1 / (1 + v)^2 of the centre's light (cos^4 law)
NOISE = (0.005, 0.025)      # sensor noise standard deviation, luminance units
BLUR = (0.002, 0.008)       # Gaussian blur sigma as a fraction of the frame's shorter side
MIN_BLUR = 0.4              # px: even a sharp small photo is not pixel-exact
TINT = (-0.04, 0.08)        # white balance: red up, blue down by this much (warm light)
QUALITY = (60, 90)          # JPEG quality
MAX_ANGLE = 6.0             # degrees either way


@dataclass(frozen=True)
class Shot:
    """Everything that makes one photo of a digit, so a photo can be re-made or drawn clean."""

    width: int                      # frame, px
    height: int
    fraction: float                 # the digit's longer side / the frame's shorter side
    position: tuple[float, float]   # where the digit sits in the room left around it, 0..1 in x, y
    angle: float                    # degrees, counter-clockwise
    paper: float                    # mean paper luminance over the frame
    contrast: float                 # ink = paper * (1 - contrast)
    gradient: tuple[float, float]   # light change per half frame in x, y
    vignette: float                 # 0: even light to the corners
    noise: float                    # sensor noise std, luminance units
    blur: float                     # Gaussian sigma, px
    tint: float                     # white balance shift, red vs blue
    quality: int                    # JPEG quality
    seed: int                       # the noise draw


def draw_shot(seed: int | np.random.Generator, paper: float | None = None,
              max_angle: float = MAX_ANGLE) -> Shot:
    """Random settings over the module's ranges; `paper` fixes the paper luminance instead."""
    if paper is not None and not 0.0 < paper <= 1.0:
        raise ValueError(f"paper luminance must be in (0, 1], got {paper}")
    rng = np.random.default_rng(seed)
    short = int(rng.integers(SHORT_SIDE[0], SHORT_SIDE[1] + 1))
    long = int(round(short * rng.uniform(1.0, 4 / 3)))
    width, height = (short, long) if rng.random() < 0.5 else (long, short)
    drawn_paper = float(rng.uniform(*PAPER))  # drawn either way, so `paper` changes nothing else
    return Shot(width=width, height=height, fraction=float(rng.uniform(*FRACTION)),
                position=(float(rng.random()), float(rng.random())),
                angle=float(rng.uniform(-max_angle, max_angle)),
                paper=drawn_paper if paper is None else float(paper),
                contrast=float(rng.uniform(*CONTRAST)),
                gradient=(float(rng.uniform(-GRADIENT, GRADIENT)), float(rng.uniform(-GRADIENT, GRADIENT))),
                vignette=float(rng.uniform(*VIGNETTE)), noise=float(rng.uniform(*NOISE)),
                blur=max(MIN_BLUR, float(rng.uniform(*BLUR)) * short), tint=float(rng.uniform(*TINT)),
                quality=int(rng.integers(QUALITY[0], QUALITY[1] + 1)), seed=int(rng.integers(2**31)))


def coverage(digit: torch.Tensor | np.ndarray, shot: Shot) -> np.ndarray:
    """Ink coverage of the frame, float32 [height, width] in 0..1: the digit scaled, turned, placed."""
    d = np.asarray(digit, dtype=np.float32) / 255.0
    if d.shape != (28, 28):
        raise ValueError(f"expected a 28x28 digit, got shape {d.shape}")
    frame = np.zeros((shot.height, shot.width), np.float32)
    box = ndimage.find_objects((d > 0).astype(np.int8))  # the ink's bounding box
    if not box:  # no ink: blank paper, to check that no digit is found in it
        return frame
    d = d[box[0]]
    scale = shot.fraction * min(shot.width, shot.height) / max(d.shape)
    size = (max(1, round(d.shape[1] * scale)), max(1, round(d.shape[0] * scale)))
    patch = Image.fromarray(d).resize(size, Image.BICUBIC)
    if shot.angle:
        patch = patch.rotate(shot.angle, Image.BICUBIC, expand=True, fillcolor=0)
    patch = np.clip(np.asarray(patch), 0, 1)
    ph, pw = patch.shape
    if ph > shot.height or pw > shot.width:
        raise ValueError(f"a {pw}x{ph} digit does not fit a {shot.width}x{shot.height} frame")
    x = int(round(shot.position[0] * (shot.width - pw)))
    y = int(round(shot.position[1] * (shot.height - ph)))
    frame[y:y + ph, x:x + pw] = patch
    return frame


def illumination(shot: Shot) -> np.ndarray:
    """Light falling on the paper, [height, width], mean 1: a linear gradient times a vignette."""
    x = np.linspace(-1, 1, shot.width, dtype=np.float32)[None, :]
    y = np.linspace(-1, 1, shot.height, dtype=np.float32)[:, None]
    r2 = (x * x + y * y) / 2  # 1 in the corners
    light = (1 + shot.gradient[0] * x + shot.gradient[1] * y) / (1 + shot.vignette * r2) ** 2
    return light / light.mean()


def photograph(digit: torch.Tensor | np.ndarray, shot: Shot) -> Image.Image:
    """The digit as a phone photo shows it: an RGB image, round-tripped through JPEG."""
    lum = illumination(shot) * shot.paper * (1 - shot.contrast * coverage(digit, shot))
    # the lens blurs the scene (edges repeated, 3 sigma each side); the sensor adds noise after
    lum = ndimage.gaussian_filter(lum, shot.blur, mode="nearest", radius=int(np.ceil(3 * shot.blur)))
    rgb = lum[..., None] * np.array([1 + shot.tint, 1.0, 1 - shot.tint], np.float32)
    rng = np.random.default_rng(shot.seed)
    rgb = rgb + rng.normal(0.0, shot.noise, rgb.shape).astype(np.float32)
    pixels = np.round(255 * np.clip(rgb, 0, 1)).astype(np.uint8)
    Image.fromarray(pixels, "RGB").save(buffer := io.BytesIO(), "JPEG", quality=shot.quality)
    return Image.open(buffer)


def clean(digit: torch.Tensor | np.ndarray, shot: Shot) -> Image.Image:
    """The same digit, size, place and angle as `photograph`, black on white, lossless: RGB."""
    gray = np.round(255 * (1 - coverage(digit, shot))).astype(np.uint8)
    return Image.fromarray(gray, "L").convert("RGB")


def shot_for(seed: int, index: int, paper: float | None = None) -> Shot:
    """The shot of the `index`-th digit of a set: the same whatever else is in the set."""
    return draw_shot(np.random.default_rng([seed, index]), paper=paper)
