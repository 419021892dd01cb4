"""CLAHE: OpenCV's `createCLAHE` on 8-bit images, the same definition in torch for deeper ones."""

import cv2
import numpy as np
import pytest
import torch

from processing.image_processing_medvl import MedVLImageProcessor
from processing.local_contrast_medvl import local_contrast_normalize


def radiograph_like(rng, height, width):
    """Smooth structure plus noise, 8 bit (plain noise would leave the tile mappings near-identical)."""
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    smooth = 0.5 + 0.3 * np.sin(6 * x + rng.random()) * np.cos(4 * y + rng.random())
    return (np.clip(smooth + rng.normal(0, 0.05, (height, width)), 0, 1) * 255).astype(np.uint8)


@pytest.mark.parametrize(
    "height, width, grid, clip_limit",
    [(384, 384, 8, 2.0), (384, 300, 8, 2.0), (300, 384, (8, 8), 2.5), (37, 53, (3, 5), 3.0), (24, 24, 8, 2.0),
     (20, 13, 8, 1.0), (8, 13, 8, 2.0), (1, 9, 4, 2.0), (64, 64, 1, 4.0), (100, 77, (7, 2), 8.0)],
)
def test_float_path_matches_opencv_within_one_grey_level(height, width, grid, clip_limit):
    rng = np.random.default_rng(height * width)
    images = np.stack([radiograph_like(rng, height, width), rng.integers(0, 256, (height, width), dtype=np.uint8),
                       (100 + 20 * rng.random((height, width))).astype(np.uint8)])[:, None]
    rows, cols = (grid, grid) if isinstance(grid, int) else grid
    clahe = cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=(min(cols, width), min(rows, height)))
    opencv = torch.from_numpy(np.stack([clahe.apply(image[0]) for image in images])[:, None])
    through_uint8 = local_contrast_normalize(torch.from_numpy(images), grid, clip_limit)
    through_float = local_contrast_normalize(torch.from_numpy(images).float(), grid, clip_limit)
    assert through_uint8.dtype == torch.uint8 and torch.equal(through_uint8, opencv)
    assert through_float.dtype == torch.float32
    # OpenCV rounds its tile mappings and its output: half a grey level each at most.
    assert (through_float - opencv.float()).abs().max() <= 1.0
    assert (through_float - opencv.float()).abs().mean() < 0.5


def test_float_path_keeps_levels_between_the_8_bit_ones():
    deep = torch.linspace(100.0, 120.0, 64 * 64).reshape(1, 1, 64, 64)
    out = local_contrast_normalize(deep, tile_grid=1, clip_limit=4.0)
    assert len(out.unique()) > 1000  # not cut to 256 levels
    assert torch.all(out.flatten().diff() >= 0)


def test_processor_equalises_8_bit_images_with_opencv():
    image = radiograph_like(np.random.default_rng(0), 96, 64)
    processor = MedVLImageProcessor(size=48, do_local_contrast=True, local_contrast_tile_grid=[4, 2],
                                    local_contrast_clip_limit=3.0, do_normalize=False, do_rescale=False)
    resized = MedVLImageProcessor(size=48, do_normalize=False, do_rescale=False)(image, return_tensors="pt")
    expected = cv2.createCLAHE(clipLimit=3.0, tileGridSize=(2, 4)).apply(resized["pixel_values"][0, 0].byte().numpy())
    out = processor(image, return_tensors="pt")["pixel_values"][0]
    assert torch.equal(out, torch.from_numpy(expected).float().expand(3, 48, 48))


def test_opencv_threads_follow_torch_threads_as_in_a_data_loader_worker():
    images = torch.randint(0, 256, (1, 32, 32), dtype=torch.uint8)
    threads, opencv_threads = torch.get_num_threads(), cv2.getNumThreads()
    try:
        torch.set_num_threads(1)  # what torch sets in every DataLoader worker
        cv2.setNumThreads(4)
        local_contrast_normalize(images)
        assert cv2.getNumThreads() == 1
    finally:
        torch.set_num_threads(threads)
        cv2.setNumThreads(opencv_threads)
