"""Joint image-report augmentation for training: what happens to the image happens to the text.

`JointAugmentation` applies, each step switchable and in this order:

1. random resized crop: a box covering a random fraction `crop_scale` of the image area with
   aspect ratio (width / height) in `crop_ratio` (log-uniform), resized to `output_size` (the
   input size when None); after 10 failed draws it falls back to a centred crop;
2. colour jitter: brightness factor in [1 - brightness, 1 + brightness] (multiplies intensities)
   and contrast factor in [1 - contrast, 1 + contrast] (scales distances from the mean), in
   random order, computed in float and clipped to the mode's range, so 16-bit ('I;16', 'I')
   and float ('F') radiographs keep their bit depth;
3. horizontal flip with probability `flip_probability`, and the report's sides swapped with
   `swap_laterality` so that "left effusion" still describes the flipped image.

Images in 'L', 'RGB', 'I;16', 'I' and 'F' keep their mode; palette, alpha and other 16-bit byte
order modes are converted first (see `_CONVERTED_MODES`).

All randomness comes from the `rng` passed in (a `random.Random`), so the same seed gives the
same image and report.
"""

import math
import random

import numpy as np
from PIL import Image

from .clinical_text_medvl import swap_laterality

SUPPORTED_MODES = ("L", "RGB", "I;16", "I", "F")
# Other modes are first brought to the nearest supported one (alpha is dropped, palettes are
# expanded, other 16-bit byte orders become 'I;16'); anything else is refused.
_CONVERTED_MODES = {
    "1": "L", "LA": "L", "P": "RGB", "PA": "RGB", "RGBA": "RGB", "RGBa": "RGB", "RGBX": "RGB",
    "CMYK": "RGB", "YCbCr": "RGB", "LAB": "RGB", "HSV": "RGB",
}
# Value range each integer mode clips to; 'F' is not clipped.
_MODE_RANGE = {"L": (0, 255), "RGB": (0, 255), "I;16": (0, 65535)}


class JointAugmentation:
    """Random resized crop, brightness/contrast jitter and a laterality-aware horizontal flip.

    Args:
        crop_scale: (min, max) fraction of the image area kept by the crop.
        crop_ratio: (min, max) aspect ratio (width / height) of the crop box.
        output_size: (width, height) or an int for a square output; None keeps the input size.
        brightness: maximum relative brightness change (0 disables it).
        contrast: maximum relative contrast change (0 disables it).
        flip_probability: chance of a horizontal flip.
        swap_laterality_on_flip: swap left/right in the report when the image is flipped.
        random_crop, color_jitter, horizontal_flip: switch each step on or off.
    """

    def __init__(
        self,
        crop_scale=(0.8, 1.0),
        crop_ratio=(0.9, 1.1),
        output_size=None,
        brightness=0.2,
        contrast=0.2,
        flip_probability=0.5,
        swap_laterality_on_flip=True,
        random_crop=True,
        color_jitter=True,
        horizontal_flip=True,
    ):
        if not (0 < crop_scale[0] <= crop_scale[1] <= 1):
            raise ValueError(f"crop_scale must satisfy 0 < min <= max <= 1, got {crop_scale}")
        if not (0 < crop_ratio[0] <= crop_ratio[1]):
            raise ValueError(f"crop_ratio must satisfy 0 < min <= max, got {crop_ratio}")
        if not (0 <= brightness < 1 and 0 <= contrast < 1):
            raise ValueError(f"brightness and contrast must be in [0, 1), got {brightness}, {contrast}")
        if not 0 <= flip_probability <= 1:
            raise ValueError(f"flip_probability must be in [0, 1], got {flip_probability}")
        if isinstance(output_size, int):
            output_size = (output_size, output_size)
        if output_size is not None and (len(output_size) != 2 or min(output_size) < 1):
            raise ValueError(f"output_size must be None, an int or (width, height), got {output_size}")
        self.crop_scale = tuple(crop_scale)
        self.crop_ratio = tuple(crop_ratio)
        self.output_size = tuple(output_size) if output_size is not None else None
        self.brightness = brightness
        self.contrast = contrast
        self.flip_probability = flip_probability
        self.swap_laterality_on_flip = swap_laterality_on_flip
        self.random_crop = random_crop
        self.color_jitter = color_jitter
        self.horizontal_flip = horizontal_flip

    def to_dict(self):
        """Settings as a JSON-serialisable dict; `JointAugmentation(**d)` rebuilds it."""
        return {
            "crop_scale": list(self.crop_scale),
            "crop_ratio": list(self.crop_ratio),
            "output_size": list(self.output_size) if self.output_size else None,
            "brightness": self.brightness,
            "contrast": self.contrast,
            "flip_probability": self.flip_probability,
            "swap_laterality_on_flip": self.swap_laterality_on_flip,
            "random_crop": self.random_crop,
            "color_jitter": self.color_jitter,
            "horizontal_flip": self.horizontal_flip,
        }

    def __repr__(self):
        return f"JointAugmentation({', '.join(f'{k}={v!r}' for k, v in self.to_dict().items())})"

    def __call__(self, image, report, rng=None):
        """Augment one image-report pair; returns (image, report). `rng` is a `random.Random`
        (a fresh unseeded one when None)."""
        if not isinstance(image, Image.Image):
            raise ValueError(f"image must be a PIL.Image, got {type(image).__name__}")
        image = _supported(image)
        if not isinstance(report, str) or not report.strip():
            raise ValueError(f"report must be a non-empty string, got {report!r:.60}")
        rng = rng if rng is not None else random.Random()
        if self.random_crop:
            image = self._crop(image, rng)
        elif self.output_size is not None and image.size != self.output_size:
            image = image.resize(self.output_size, Image.Resampling.BILINEAR)
        if self.color_jitter and (self.brightness or self.contrast):
            image = self._jitter(image, rng)
        if self.horizontal_flip and rng.random() < self.flip_probability:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            if self.swap_laterality_on_flip:
                report = swap_laterality(report)
        return image, report

    def crop_box(self, width, height, rng):
        """(left, top, right, bottom) of a random box within a width x height image."""
        area = width * height
        log_low, log_high = math.log(self.crop_ratio[0]), math.log(self.crop_ratio[1])
        for _ in range(10):
            target = area * rng.uniform(*self.crop_scale)
            ratio = math.exp(rng.uniform(log_low, log_high))
            box_w = int(round(math.sqrt(target * ratio)))
            box_h = int(round(math.sqrt(target / ratio)))
            if 0 < box_w <= width and 0 < box_h <= height:
                left = rng.randint(0, width - box_w)
                top = rng.randint(0, height - box_h)
                return left, top, left + box_w, top + box_h
        # Fallback: the largest centred box whose ratio lies in range.
        ratio = min(max(width / height, self.crop_ratio[0]), self.crop_ratio[1])
        box_w, box_h = (width, round(width / ratio)) if width / height < ratio else (round(height * ratio), height)
        box_w, box_h = min(box_w, width), min(box_h, height)
        left, top = (width - box_w) // 2, (height - box_h) // 2
        return left, top, left + box_w, top + box_h

    def _crop(self, image, rng):
        box = self.crop_box(*image.size, rng)
        size = self.output_size or image.size
        return image.resize(size, Image.Resampling.BILINEAR, box=box)

    def _jitter(self, image, rng):
        factors = []
        if self.brightness:
            factors.append(("brightness", rng.uniform(1 - self.brightness, 1 + self.brightness)))
        if self.contrast:
            factors.append(("contrast", rng.uniform(1 - self.contrast, 1 + self.contrast)))
        rng.shuffle(factors)
        mode = image.mode
        pixels = np.asarray(image, dtype=np.float64)
        for kind, factor in factors:
            if kind == "brightness":
                pixels = pixels * factor
            else:
                grey = pixels.mean(axis=-1) if pixels.ndim == 3 else pixels
                pixels = grey.mean() + (pixels - grey.mean()) * factor
        return _to_image(pixels, mode, image)


def _supported(image):
    if image.mode in SUPPORTED_MODES:
        return image
    if image.mode in _CONVERTED_MODES:
        return image.convert(_CONVERTED_MODES[image.mode])
    if image.mode.startswith("I;16"):
        return Image.fromarray(np.asarray(image).astype(np.uint16))
    raise ValueError(
        f"image mode {image.mode!r} is not supported; use one of {SUPPORTED_MODES} or {sorted(_CONVERTED_MODES)}"
    )


def _to_image(pixels, mode, original):
    if mode == "F":
        return Image.fromarray(pixels.astype(np.float32))
    if mode == "I":
        # 'I' is 32-bit; a 16-bit PNG often opens as 'I', so keep its range when it fits 16 bits.
        high = 65535 if np.asarray(original).max() <= 65535 else 2**31 - 1
        low = 0 if np.asarray(original).min() >= 0 else -(2**31)
        return Image.fromarray(np.clip(np.rint(pixels), low, high).astype(np.int32))
    low, high = _MODE_RANGE[mode]
    dtype = np.uint16 if mode == "I;16" else np.uint8
    return Image.fromarray(np.clip(np.rint(pixels), low, high).astype(dtype))


__all__ = ["SUPPORTED_MODES", "JointAugmentation"]
