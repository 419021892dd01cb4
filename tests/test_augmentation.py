import json
import random

import numpy as np
import pytest
from PIL import Image

from processing.augmentation import JointAugmentation
from processing.clinical_text_medvl import swap_laterality

REPORT = "FINDINGS: Small left pleural effusion with L base atelectasis. LLL opacity. No right PTX.\nIMPRESSION: Left effusion."
FLIP_ONLY = dict(random_crop=False, color_jitter=False, flip_probability=1.0)


def gradient_image(mode="L", size=(48, 40)):
    width, height = size
    x = np.linspace(0, 1, width)[None, :] * np.linspace(0.3, 1, height)[:, None]
    if mode in ("L", "RGB"):
        grey = (x * 250).astype(np.uint8)
        return Image.fromarray(np.stack([grey, grey // 2, 255 - grey], -1) if mode == "RGB" else grey)
    if mode == "I;16":
        return Image.fromarray((1000 + x * 60000).astype(np.uint16))
    if mode == "I":
        return Image.fromarray((1000 + x * 60000).astype(np.int32))
    return Image.fromarray((-1000 + x * 3000).astype(np.float32))


def effusion_image(side, size=64):
    """A dark chest with a bright region low in the named (patient's) lung: the patient's left is
    the image's right on a PA radiograph."""
    pixels = np.full((size, size), 40, np.uint8)
    columns = slice(size // 2 + 4, size - 4) if side == "left" else slice(4, size // 2 - 4)
    pixels[size // 2:size - 4, columns] = 220
    return Image.fromarray(pixels)


def bright_side(image):
    pixels = np.asarray(image, dtype=np.float64)
    half = pixels.shape[1] // 2
    return "left" if pixels[:, half:].mean() > pixels[:, :half].mean() else "right"


def test_flip_mirrors_image_and_swaps_report():
    image = gradient_image()
    flipped, report = JointAugmentation(**FLIP_ONLY)(image, REPORT, random.Random(0))
    assert np.array_equal(np.asarray(flipped), np.asarray(image)[:, ::-1])
    assert report == swap_laterality(REPORT)
    assert "Small right pleural effusion with R base atelectasis. RLL opacity. No left PTX." in report
    twice, restored = JointAugmentation(**FLIP_ONLY)(flipped, report, random.Random(0))
    assert np.array_equal(np.asarray(twice), np.asarray(image)) and restored == REPORT


def test_flip_without_swap_and_no_flip():
    image = gradient_image()
    _, report = JointAugmentation(**FLIP_ONLY, swap_laterality_on_flip=False)(image, REPORT, random.Random(0))
    assert report == REPORT
    same, report = JointAugmentation(random_crop=False, color_jitter=False, flip_probability=0.0)(image, REPORT, random.Random(0))
    assert np.array_equal(np.asarray(same), np.asarray(image)) and report == REPORT


def test_pairs_stay_true_under_the_full_augmentation():
    augment = JointAugmentation(output_size=32)
    flips = 0
    for seed in range(40):
        side = ("left", "right")[seed % 2]
        image, report = augment(effusion_image(side), f"Moderate {side} pleural effusion.", random.Random(seed))
        assert f"Moderate {bright_side(image)} pleural effusion." == report
        flips += side not in report
    assert 5 < flips < 35  # flip_probability 0.5 over 40 draws


def test_same_seed_same_result_and_seeds_differ():
    augment = JointAugmentation(output_size=(40, 32))
    image = gradient_image("RGB")
    first = augment(image, REPORT, random.Random(7))
    second = augment(image, REPORT, random.Random(7))
    assert np.array_equal(np.asarray(first[0]), np.asarray(second[0])) and first[1] == second[1]
    outputs = {np.asarray(augment(image, REPORT, random.Random(seed))[0]).tobytes() for seed in range(5)}
    assert len(outputs) == 5


def test_crop_box_respects_scale_ratio_and_bounds():
    augment = JointAugmentation(crop_scale=(0.5, 0.9), crop_ratio=(0.75, 1.33))
    rng = random.Random(0)
    for _ in range(200):
        left, top, right, bottom = augment.crop_box(120, 100, rng)
        assert 0 <= left < right <= 120 and 0 <= top < bottom <= 100
        width, height = right - left, bottom - top
        assert 0.5 - 0.03 <= width * height / 12000 <= 0.9 + 0.03
        assert 0.75 - 0.03 <= width / height <= 1.33 + 0.03
    # An impossible ratio for this image falls back to a centred box inside it.
    left, top, right, bottom = JointAugmentation(crop_scale=(0.9, 1.0), crop_ratio=(3.0, 4.0)).crop_box(50, 100, rng)
    assert (left, right) == (0, 50) and bottom - top == round(50 / 3) and top == (100 - (bottom - top)) // 2


@pytest.mark.parametrize("mode, dtype", [("L", np.uint8), ("RGB", np.uint8), ("I;16", np.uint16), ("I", np.int32), ("F", np.float32)])
def test_jitter_keeps_mode_and_bit_depth(mode, dtype):
    image = gradient_image(mode)
    out, _ = JointAugmentation(output_size=24)(image, REPORT, random.Random(3))
    pixels = np.asarray(out)
    assert out.mode == mode and pixels.dtype == dtype and out.size == (24, 24)
    if mode in ("I;16", "I"):
        assert pixels.max() > 255 and len(np.unique(pixels)) > 256
    if mode == "F":
        assert pixels.min() < 0  # float images are not clipped to a display range


def test_brightness_and_contrast_factors():
    # Mid-range 16-bit values, so that no factor clips and the factors can be read back.
    image = Image.fromarray((np.asarray(gradient_image("I;16"), dtype=np.float64) / 3 + 20000).astype(np.uint16))
    source = np.asarray(image, dtype=np.float64)
    for seed in range(10):
        bright, _ = JointAugmentation(random_crop=False, horizontal_flip=False, contrast=0.0)(image, REPORT, random.Random(seed))
        ratio = np.asarray(bright, dtype=np.float64).mean() / source.mean()
        assert 0.8 - 1e-3 <= ratio <= 1.2 + 1e-3
        contrasted, _ = JointAugmentation(random_crop=False, horizontal_flip=False, brightness=0.0)(image, REPORT, random.Random(seed))
        pixels = np.asarray(contrasted, dtype=np.float64)
        assert abs(pixels.mean() - source.mean()) < 1.0
        assert 0.8 - 1e-3 <= pixels.std() / source.std() <= 1.2 + 1e-3


def test_all_steps_off_is_identity_and_output_size_still_applies():
    image = gradient_image("RGB")
    off = JointAugmentation(random_crop=False, color_jitter=False, horizontal_flip=False)
    same, report = off(image, REPORT, random.Random(0))
    assert np.array_equal(np.asarray(same), np.asarray(image)) and report == REPORT
    resized, _ = JointAugmentation(random_crop=False, color_jitter=False, horizontal_flip=False, output_size=16)(image, REPORT)
    assert resized.size == (16, 16)


@pytest.mark.parametrize("mode, expected", [("RGBA", "RGB"), ("P", "RGB"), ("LA", "L"), ("1", "L"), ("I;16B", "I;16")])
def test_other_modes_are_brought_to_a_supported_one(mode, expected):
    image = Image.new(mode, (20, 10), 1)
    out, _ = JointAugmentation()(image, REPORT, random.Random(0))
    assert out.mode == expected and out.size == (20, 10)
    if mode == "I;16B":
        big_endian = Image.fromarray(np.full((10, 20), 40000, np.uint16).astype(">u2"))
        assert big_endian.mode == "I;16B"
        flipped, _ = JointAugmentation(**FLIP_ONLY)(big_endian, REPORT, random.Random(0))
        assert np.asarray(flipped).max() == 40000


def test_settings_round_trip():
    augment = JointAugmentation(output_size=(64, 48), brightness=0.1, flip_probability=0.3)
    rebuilt = JointAugmentation(**json.loads(json.dumps(augment.to_dict())))
    assert rebuilt.to_dict() == augment.to_dict()
    image = gradient_image()
    assert np.array_equal(np.asarray(rebuilt(image, REPORT, random.Random(1))[0]), np.asarray(augment(image, REPORT, random.Random(1))[0]))


@pytest.mark.parametrize(
    "image, report, message",
    [
        (np.zeros((8, 8), np.uint8), REPORT, "image must be a PIL.Image, got ndarray"),
        (Image.new("La", (8, 8)), REPORT, "image mode 'La' is not supported"),
        (Image.new("L", (8, 8)), "   ", "report must be a non-empty string"),
        (Image.new("L", (8, 8)), None, "report must be a non-empty string"),
    ],
)
def test_bad_input(image, report, message):
    with pytest.raises(ValueError, match=message):
        JointAugmentation()(image, report, random.Random(0))


@pytest.mark.parametrize(
    "settings", [dict(crop_scale=(0.0, 1.0)), dict(crop_scale=(0.9, 0.8)), dict(crop_ratio=(1.2, 1.1)),
                 dict(brightness=1.5), dict(flip_probability=2), dict(output_size=(0, 4))],
)
def test_bad_settings(settings):
    with pytest.raises(ValueError):
        JointAugmentation(**settings)
