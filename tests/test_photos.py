"""Photo-like digits: the generator keeps its promises, and photos are recognized as well as scans.

Every digit here is an MNIST *training* digit: the test split is for notebook 07 alone.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from helpers import data, evaluate, model as M, photos, train as T
from helpers.mnist import load_mnist
from helpers.predict import ImageError, preprocess

UNSEEN = slice(12000, 12200)  # training digits the model below never saw


@pytest.fixture(scope="module")
def train_digits(mnist_raw):
    return load_mnist("train", data_dir=mnist_raw, progress=False)


@pytest.fixture(scope="module")
def model(train_digits):
    """Trained for a few seconds on the first 12,000 training digits, shifted (about 96% accurate)."""
    torch.set_num_threads(1)
    images, labels = train_digits
    T.seed_everything(0)
    model = M.MLP((256, 128), (0.1, 0.1), lr=0.1)
    train = data.make_loader(data.DigitsDataset(images[:11000], labels[:11000]), 128, shuffle=True, seed=0)
    val = data.make_loader(data.DigitsDataset(images[11000:12000], labels[11000:12000]), 2048)
    T.fit(model, train, val, 5, augment=data.RandomShift(2), log=lambda s: None, progress=False)
    return model.eval()


def luminance(image) -> np.ndarray:
    return np.asarray(image.convert("L"), dtype=np.float64) / 255


# --- the generator -------------------------------------------------------------------------------

def test_same_seed_same_photo(train_digits):
    digit = train_digits[0][12000]
    assert photos.draw_shot(5) == photos.draw_shot(5) != photos.draw_shot(6)
    assert photos.shot_for(0, 3) == photos.shot_for(0, 3) != photos.shot_for(1, 3)
    a, b = photos.photograph(digit, photos.shot_for(0, 3)), photos.photograph(digit, photos.shot_for(0, 3))
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert np.array_equal(np.asarray(photos.clean(digit, photos.shot_for(0, 3))),
                          np.asarray(photos.clean(digit, photos.shot_for(0, 3))))


def test_settings_stay_in_their_ranges_and_span_them():
    shots = [photos.shot_for(0, i) for i in range(400)]

    def values(name):
        return np.array([getattr(s, name) for s in shots], dtype=np.float64)

    for name, (low, high) in [("paper", photos.PAPER), ("contrast", photos.CONTRAST),
                              ("fraction", photos.FRACTION), ("vignette", photos.VIGNETTE),
                              ("noise", photos.NOISE), ("quality", photos.QUALITY)]:
        v = values(name)
        assert v.min() >= low and v.max() <= high, name
        assert v.min() < low + 0.1 * (high - low) and v.max() > high - 0.1 * (high - low), name  # drawn across
    short = np.minimum(values("width"), values("height"))
    assert short.min() >= photos.SHORT_SIDE[0] and short.max() <= photos.SHORT_SIDE[1]
    assert (np.maximum(values("width"), values("height")) <= np.ceil(short * 4 / 3)).all()
    assert np.abs(values("angle")).max() <= photos.MAX_ANGLE and np.abs(values("angle")).max() > 4
    assert np.abs(np.array([s.gradient for s in shots])).max() <= photos.GRADIENT
    assert (values("blur") >= photos.MIN_BLUR).all()
    assert (values("blur") <= np.maximum(photos.BLUR[1] * short, photos.MIN_BLUR) + 1e-9).all()


def test_paper_can_be_fixed_and_nothing_else_changes():
    shot = photos.draw_shot(4)
    assert photos.draw_shot(4, paper=0.35) == dataclasses.replace(shot, paper=0.35)
    assert photos.draw_shot(4, max_angle=0).angle == 0
    with pytest.raises(ValueError, match="paper"):
        photos.draw_shot(4, paper=1.5)


def test_digit_takes_its_share_of_the_frame_off_centre(train_digits):
    centres = []
    for i in range(20):
        shot = dataclasses.replace(photos.shot_for(1, i), angle=0.0)
        digit = train_digits[0][12000 + i]
        ink = np.round(255 * photos.coverage(digit, shot)) > 0  # what 8 bits keep
        ys, xs = np.nonzero(ink)
        short = min(shot.width, shot.height)
        longest = max(ys.max() - ys.min() + 1, xs.max() - xs.min() + 1)
        assert abs(longest - shot.fraction * short) <= 0.02 * short + 2, (i, longest, shot)
        centres.append(((xs.min() + xs.max()) / 2 / shot.width, (ys.min() + ys.max()) / 2 / shot.height))
        # the clean rendering is that same digit, black on white, lossless
        clean = luminance(photos.clean(digit, shot))
        assert clean.shape == (shot.height, shot.width) and clean.max() == 1 and clean.min() == 0
        assert np.array_equal(clean < 1, ink)
    centres = np.array(centres)
    assert np.abs(centres - 0.5).max() > 0.1 and centres.std(0).min() > 0.03  # placed at random


def test_photo_has_grey_paper_dark_ink_uneven_light_and_is_a_jpeg(train_digits):
    digit = train_digits[0][12001]
    for i, paper in enumerate((0.3, 0.6, 0.9)):
        shot = dataclasses.replace(photos.shot_for(2, i), paper=paper, gradient=(0.2, 0.0), vignette=0.0)
        photo = photos.photograph(digit, shot)
        assert photo.format == "JPEG" and photo.mode == "RGB" and photo.size == (shot.width, shot.height)
        lum, ink = luminance(photo), photos.coverage(digit, shot)
        paper_pixels = lum[ink == 0]
        assert abs(np.median(paper_pixels) - paper) < 0.05, (paper, np.median(paper_pixels))
        assert np.median(lum[ink > 0.9]) < paper * (1 - shot.contrast / 2)  # ink is dark
        left, right = lum[:, : shot.width // 5], lum[:, -shot.width // 5:]  # lit from the right
        assert np.median(right) > np.median(left) * 1.15 or paper == 0.9  # (0.9 clips at white)
    light = photos.illumination(dataclasses.replace(shot, gradient=(0.0, 0.0), vignette=0.3))
    assert abs(light.mean() - 1) < 1e-5 and light[0, 0] < 0.8 * light[shot.height // 2, shot.width // 2]


def test_blank_photos_are_no_digit():
    """Paper with uneven light, noise, blur and JPEG but no ink: no digit found, at any brightness."""
    nothing = torch.zeros(28, 28, dtype=torch.uint8)
    for i, paper in enumerate(np.linspace(0.3, 0.9, 13)):
        shot = photos.draw_shot(np.random.default_rng([9, i]), paper=float(paper))
        if i % 2:  # the strongest light fall-off the generator draws
            shot = dataclasses.replace(shot, vignette=photos.VIGNETTE[1], gradient=(-0.2, 0.2))
        with pytest.raises(ImageError, match="no digit found"):
            preprocess(photos.photograph(nothing, shot))


# --- recognition ---------------------------------------------------------------------------------

def test_photos_are_recognized_as_well_as_clean_renderings(model, train_digits):
    images, labels = train_digits[0][UNSEEN], train_digits[1][UNSEEN]
    result = evaluate.photo_accuracy(model, data.Normalization(), images, labels, seed=0)
    assert result["n"] == 200 and result["no_digit_found"] == 0
    assert result["clean"] > 0.92, result
    assert result["photo"] >= result["clean"] - 0.03, result
    assert sum(b["n"] for b in result["by_paper"]) == 200
    for b in result["by_paper"]:  # dark grey paper as much as white
        assert b["n"] >= 50 and b["photo"] >= b["clean"] - 0.03, result
