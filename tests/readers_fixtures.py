"""Tiny image files and row comparison for the reader tests (the tests write every fixture)."""

from pathlib import Path

import numpy as np
from PIL import Image


def write_image(path, shade: int, size=(12, 10), mode="L") -> Path:
    """A small image whose pixels encode `shade`, so rows can be told apart after decoding."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.full((size[1], size[0]), shade % 256, dtype=np.uint8)
    pixels[0, 0] = 255 - shade % 256
    image = Image.fromarray(pixels, mode="L").convert(mode)
    image.save(path, format="PNG" if path.suffix.lower() == ".png" else "JPEG", quality=95)
    return path


def write_corrupt_image(path) -> Path:
    """A file named like an image whose bytes are not one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG, truncated")
    return path


def comparable(row: dict) -> dict:
    """A row with its decoded images replaced by (mode, size, pixel bytes), for equality checks."""
    out = {}
    for name, value in row.items():
        if isinstance(value, Image.Image):
            out[name] = (value.mode, value.size, value.tobytes())
        else:
            out[name] = value
    return out


def rows_of(dataset) -> list:
    return [comparable(row) for row in dataset]
