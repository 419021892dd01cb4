"""MedVLImageProcessor: same output from every source, resize modes, CLAHE, normalisation,
pydicom's own test files, and errors that name the item."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from dicom_fixtures import pydicom_reference, pydicom_test_files, write_dicom
from processing.image_io_medvl import MedicalImageError, read_medical_image
from processing.image_processing_medvl import MedVLImageProcessor
from processing.local_contrast_medvl import local_contrast_normalize

MEAN = torch.tensor(IMAGENET_DEFAULT_MEAN).view(3, 1, 1)
STD = torch.tensor(IMAGENET_DEFAULT_STD).view(3, 1, 1)


def grey_image(height=40, width=30, seed=0, dtype=np.uint8, high=255):
    return np.random.default_rng(seed).integers(0, high + 1, (height, width)).astype(dtype)


def pixel_values(processor, images):
    return processor(images, return_tensors="pt")["pixel_values"]


def test_default_output_is_float32_b3hw_at_384():
    out = pixel_values(MedVLImageProcessor(), [Image.fromarray(grey_image())] * 2)
    assert out.shape == (2, 3, 384, 384) and out.dtype == torch.float32


@pytest.mark.parametrize("size", [336, 512])
def test_configured_sizes(size):
    assert pixel_values(MedVLImageProcessor(size=size), grey_image()).shape == (1, 3, size, size)


def test_same_output_from_file_pil_and_array_8bit(tmp_path):
    pixels = grey_image()
    Image.fromarray(pixels).save(tmp_path / "x.png")
    processor = MedVLImageProcessor(size=24)
    from_file = pixel_values(processor, str(tmp_path / "x.png"))
    for other in (Image.fromarray(pixels), pixels, torch.from_numpy(pixels), pixels[..., None]):
        torch.testing.assert_close(pixel_values(processor, other), from_file, rtol=0, atol=0)


def test_same_output_from_file_pil_and_array_16bit_and_dicom(tmp_path):
    deep = grey_image(dtype=np.uint16, high=65535)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    dicom = write_dicom(tmp_path / "x.dcm", deep, WindowCenter=30000, WindowWidth=40000)
    processor = MedVLImageProcessor(size=24, do_local_contrast=True)
    from_png = pixel_values(processor, tmp_path / "deep.png")
    torch.testing.assert_close(pixel_values(processor, deep), from_png, rtol=0, atol=1e-5)
    torch.testing.assert_close(pixel_values(processor, Image.open(tmp_path / "deep.png")), from_png, rtol=0, atol=1e-5)
    from_dicom = pixel_values(processor, str(dicom))
    dicom_pil = read_medical_image(dicom)
    torch.testing.assert_close(pixel_values(processor, dicom_pil), from_dicom, rtol=0, atol=0)
    torch.testing.assert_close(pixel_values(processor, np.asarray(dicom_pil)), from_dicom, rtol=0, atol=0)


def test_grey_becomes_three_identical_channels_and_normalisation_is_exact():
    constant = np.full((10, 10), 51, np.uint8)
    out = pixel_values(MedVLImageProcessor(size=8), constant)[0]
    expected = (torch.full((3, 8, 8), 51 / 255.0) - MEAN) / STD
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)


def test_custom_mean_std_and_no_rescale():
    custom = MedVLImageProcessor(size=4, image_mean=[0.5] * 3, image_std=[0.25] * 3)
    out = pixel_values(custom, np.full((4, 4), 255, np.uint8))
    torch.testing.assert_close(out, torch.full((1, 3, 4, 4), 2.0))
    unscaled = MedVLImageProcessor(size=4, do_rescale=False, do_normalize=False)
    raw = pixel_values(unscaled, np.full((4, 4), 200, np.uint8))
    torch.testing.assert_close(raw, torch.full((1, 3, 4, 4), 200.0))


def test_centre_crop_and_channels_last():
    processor = MedVLImageProcessor(size=32, do_center_crop=True, crop_size={"height": 16, "width": 24})
    assert pixel_values(processor, grey_image()).shape == (1, 3, 16, 24)
    last = MedVLImageProcessor(size=8)(grey_image(), data_format="channels_last", return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(last.permute(0, 3, 1, 2), pixel_values(MedVLImageProcessor(size=8), grey_image()))
    with pytest.raises(ValueError, match="resize_mode='pad'"):
        MedVLImageProcessor(size=8)(grey_image(), do_pad=True)


def test_pad_mode_keeps_aspect_ratio_with_black_bands():
    wide = np.full((20, 40), 255, np.uint8)
    black = ((0.0 - MEAN) / STD).view(3)
    white = ((1.0 - MEAN) / STD).view(3)
    padded = pixel_values(MedVLImageProcessor(size=32, resize_mode="pad"), wide)[0]
    assert padded.shape == (3, 32, 32)
    torch.testing.assert_close(padded[:, :8, :], black.view(3, 1, 1).expand(3, 8, 32))  # top band
    torch.testing.assert_close(padded[:, -8:, :], black.view(3, 1, 1).expand(3, 8, 32))  # bottom band
    torch.testing.assert_close(padded[:, 8:24, :], white.view(3, 1, 1).expand(3, 16, 32))  # image, full width
    squashed = pixel_values(MedVLImageProcessor(size=32, resize_mode="squash"), wide)[0]
    torch.testing.assert_close(squashed, white.view(3, 1, 1).expand(3, 32, 32))


def test_clahe_raises_local_contrast_within_range():
    rng = np.random.default_rng(0)
    low_contrast = torch.from_numpy(100.0 + 20.0 * rng.random((1, 1, 64, 64))).float()
    mild = local_contrast_normalize(low_contrast, tile_grid=4, clip_limit=1.5)
    strong = local_contrast_normalize(low_contrast, tile_grid=(4, 4), clip_limit=8.0)
    assert low_contrast.std() < mild.std() < strong.std()
    assert strong.min() >= 0 and strong.max() <= 255
    # With one tile the mapping is a single monotone curve: equalisation never swaps two intensities.
    single_tile = local_contrast_normalize(low_contrast, tile_grid=1, clip_limit=4.0).flatten()
    order = low_contrast.flatten().argsort()
    assert torch.all(single_tile[order].diff() >= -1e-4)
    constant = local_contrast_normalize(torch.full((2, 1, 64, 64), 80.0), tile_grid=4, clip_limit=2.0)
    assert torch.isfinite(constant).all() and constant.std() < 1e-3  # float rounding only


def test_clahe_in_processor_and_invalid_settings():
    image = (100 + 20 * np.random.default_rng(1).random((48, 48))).astype(np.float32)
    plain = pixel_values(MedVLImageProcessor(size=32), image)
    equalised = pixel_values(
        MedVLImageProcessor(
            size=32, do_local_contrast=True, local_contrast_tile_grid=[2, 4], local_contrast_clip_limit=8.0
        ),
        image,
    )
    assert equalised.std() > 2 * plain.std()
    with pytest.raises(ValueError, match="clip_limit"):
        MedVLImageProcessor(do_local_contrast=True, local_contrast_clip_limit=0.5)
    with pytest.raises(ValueError, match="tile_grid"):
        MedVLImageProcessor(local_contrast_tile_grid=[0, 3])
    with pytest.raises(ValueError, match="resize_mode"):
        MedVLImageProcessor(resize_mode="crop")


def test_batch_of_mixed_sources(tmp_path):
    Image.fromarray(grey_image()).save(tmp_path / "a.jpg")
    dicom = write_dicom(tmp_path / "b.dcm", grey_image(dtype=np.uint16, high=4095))
    rgb = np.random.default_rng(2).integers(0, 256, (3, 25, 35), dtype=np.uint8)  # channels first
    batch = [str(tmp_path / "a.jpg"), dicom, Image.fromarray(grey_image(seed=3)), rgb, torch.from_numpy(rgb)]
    out = pixel_values(MedVLImageProcessor(size=16), batch)
    assert out.shape == (5, 3, 16, 16) and torch.isfinite(out).all()
    torch.testing.assert_close(out[3], out[4])


def test_errors_name_the_item(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    processor = MedVLImageProcessor(size=8)
    good = grey_image()
    with pytest.raises(MedicalImageError, match=r"index 1 .*broken\.png"):
        processor([good, str(tmp_path / "broken.png")])
    with pytest.raises(ValueError, match=r"index 2: unsupported image type int"):
        processor([good, good, 7])
    with pytest.raises(ValueError, match=r"index 0: image contains NaN"):
        processor([np.full((4, 4), np.nan, np.float32)])
    with pytest.raises(ValueError, match=r"index 1: expected 1-4 channels"):
        processor([good, np.zeros((6, 4, 5), np.uint8)], input_data_format="channels_first")
    with pytest.raises(ValueError, match="no images"):
        processor([])


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns about its deliberately malformed files
def test_every_pydicom_test_file_gives_pixel_values_or_a_named_error():
    """Every file pydicom ships locally (nothing downloaded): right shape, or MedicalImageError naming it exactly
    where pydicom itself gives no image (no pixel data, unreadable, or undecodable with the installed plugins)."""
    processor = MedVLImageProcessor(size=16)
    processed, refused, expected_refused = 0, [], []
    for path in pydicom_test_files():
        try:
            has_image = pydicom_reference(path) is not None
        except Exception:  # noqa: BLE001 - pydicom's own failure is the expectation
            has_image = False
        if not has_image:
            expected_refused.append(path)
        try:
            out = processor(path, return_tensors="pt")["pixel_values"]
        except MedicalImageError as error:
            assert path in str(error) and error.reason, str(error)
            refused.append(path)
            continue
        assert out.shape == (1, 3, 16, 16) and torch.isfinite(out).all(), path
        processed += 1
    assert refused == expected_refused and processed > len(refused), (processed, len(refused))


def test_saved_image_processor_reloads_as_remote_code(tmp_path):
    """Reloaded in a fresh isolated process (no repo on sys.path, offline), so the class can only
    come from the saved folder, whatever this worker registered with the Auto classes before."""
    processor = MedVLImageProcessor(size=20, resize_mode="pad", do_local_contrast=True, local_contrast_clip_limit=3.0)
    saved = tmp_path / "saved"
    processor.save_pretrained(saved)
    assert {"image_processing_medvl.py", "image_io_medvl.py", "local_contrast_medvl.py"} <= set(os.listdir(saved))
    image = grey_image(30, 50)
    np.save(tmp_path / "image.npy", np.asarray(image))
    script = (
        "import sys, numpy as np, torch\n"
        "from transformers import AutoImageProcessor\n"
        f"reloaded = AutoImageProcessor.from_pretrained({str(saved)!r}, trust_remote_code=True)\n"
        "assert type(reloaded).__module__.startswith('transformers_modules'), type(reloaded).__module__\n"
        "assert 'processing' not in sys.modules\n"
        f"out = reloaded(np.load({str(tmp_path / 'image.npy')!r}), return_tensors='pt')['pixel_values']\n"
        f"torch.save(out, {str(tmp_path / 'out.pt')!r})\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-I", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    torch.testing.assert_close(torch.load(tmp_path / "out.pt"), pixel_values(processor, image), rtol=0, atol=0)
