"""read_medical_image: JPG/PNG 8 and 16 bit, DICOM intensity pipeline, and clear errors."""

import io
import os

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, get_decoder
from pydicom.uid import (
    JPEG2000,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from dicom_fixtures import min_max, pydicom_reference, pydicom_test_files, write_dicom
from processing.image_io_medvl import MedicalImageError, read_medical_image


def ramp(height, width, high, dtype):
    return np.linspace(0, high, height * width).reshape(height, width).astype(dtype)


def test_8bit_png_and_jpg_read_as_stored(tmp_path):
    pixels = ramp(20, 30, 255, np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    Image.fromarray(pixels).save(tmp_path / "a.jpg", quality=95)
    png, jpg = read_medical_image(tmp_path / "a.png"), read_medical_image(str(tmp_path / "a.jpg"))
    assert png.mode == "L" and np.array_equal(np.asarray(png), pixels)
    assert jpg.mode == "L" and np.abs(np.asarray(jpg).astype(int) - pixels).max() < 8


def test_16bit_png_keeps_full_precision(tmp_path):
    pixels = ramp(64, 64, 65535, np.uint16)
    Image.fromarray(pixels).save(tmp_path / "deep.png")
    image = read_medical_image(tmp_path / "deep.png")
    values = np.asarray(image)
    assert image.mode == "F"
    np.testing.assert_allclose(values, pixels * (255.0 / 65535.0), rtol=0, atol=1e-3)
    assert len(np.unique(values)) > 1000  # not quantised to 256 levels


def test_palette_and_alpha_images_become_rgb_or_grey(tmp_path):
    Image.new("P", (8, 8), 3).save(tmp_path / "p.png")
    Image.new("LA", (8, 8), (90, 10)).save(tmp_path / "la.png")
    assert read_medical_image(tmp_path / "p.png").mode == "RGB"
    grey = read_medical_image(tmp_path / "la.png")
    assert grey.mode == "L" and np.all(np.asarray(grey) == 90)


def test_bytes_and_file_objects_are_accepted(tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(ramp(5, 6, 255, np.uint8)).save(buffer, format="PNG")
    from_bytes = read_medical_image(buffer.getvalue())
    buffer.seek(0)
    from_stream = read_medical_image(buffer)
    assert np.array_equal(np.asarray(from_bytes), np.asarray(from_stream))


def test_dicom_rescale_then_window(tmp_path):
    stored = np.arange(12, dtype=np.uint16).reshape(3, 4)
    path = write_dicom(tmp_path / "w.dcm", stored, RescaleSlope=2, RescaleIntercept=-5, WindowCenter=10, WindowWidth=11)
    values = np.asarray(read_medical_image(path))
    hounsfield = 2.0 * stored - 5.0
    expected = np.clip((hounsfield - 9.5) / 10.0 + 0.5, 0, 1) * 255  # DICOM linear window, c=10, w=11
    np.testing.assert_allclose(values, expected, atol=1e-4)


def test_dicom_sigmoid_window(tmp_path):
    stored = np.arange(16, dtype=np.uint16).reshape(4, 4)
    path = write_dicom(tmp_path / "s.dcm", stored, WindowCenter=8, WindowWidth=4, VOILUTFunction="SIGMOID")
    expected = 255.0 / (1.0 + np.exp(-4.0 * (stored - 8.0) / 4.0))
    np.testing.assert_allclose(np.asarray(read_medical_image(path)), expected, atol=1e-3)


def test_dicom_voi_lut_sequence_wins_over_window(tmp_path):
    lut = Dataset()
    lut.add_new("LUTDescriptor", "US", [4, 0, 8])
    lut.add_new("LUTData", "US", [0, 51, 102, 204])
    path = write_dicom(
        tmp_path / "lut.dcm", np.array([[0, 1], [2, 3]], np.uint16), VOILUTSequence=[lut], WindowCenter=1, WindowWidth=2
    )
    np.testing.assert_allclose(np.asarray(read_medical_image(path)), [[0, 63.75], [127.5, 255]], atol=1e-3)


def test_dicom_monochrome1_is_inverted(tmp_path):
    stored = ramp(4, 4, 4095, np.uint16)
    mono2 = np.asarray(read_medical_image(write_dicom(tmp_path / "m2.dcm", stored)))
    mono1 = np.asarray(
        read_medical_image(write_dicom(tmp_path / "m1.dcm", stored, PhotometricInterpretation="MONOCHROME1"))
    )
    np.testing.assert_allclose(mono1, 255.0 - mono2, atol=1e-4)
    assert mono2[0, 0] == 0 and mono2[-1, -1] == 255  # no window: the image's own range


def test_dicom_16bit_keeps_precision(tmp_path):
    stored = ramp(64, 64, 65535, np.uint16)
    values = np.asarray(read_medical_image(write_dicom(tmp_path / "deep.dcm", stored, BitsStored=16)))
    np.testing.assert_allclose(values, stored / 65535.0 * 255.0, atol=1e-3)
    assert len(np.unique(values)) > 1000


def test_dicom_signed_pixels(tmp_path):
    stored = np.array([[-1000, 0], [500, 1000]], np.int16)
    values = np.asarray(read_medical_image(write_dicom(tmp_path / "signed.dcm", stored)))
    np.testing.assert_allclose(values, (stored + 1000) / 2000.0 * 255.0, atol=1e-4)


def test_dicom_multiframe_takes_first_frame(tmp_path):
    frames = np.stack([ramp(3, 3, 100, np.uint16), np.full((3, 3), 7, np.uint16), np.zeros((3, 3), np.uint16)])
    values = np.asarray(read_medical_image(write_dicom(tmp_path / "multi.dcm", frames)))
    np.testing.assert_allclose(values, frames[0] / 100.0 * 255.0, atol=1e-4)


def test_dicom_colour(tmp_path):
    pixels = np.zeros((4, 5, 3), np.uint8) + np.array([10, 20, 30], np.uint8)
    image = read_medical_image(write_dicom(tmp_path / "rgb.dcm", pixels))
    assert image.mode == "RGB" and np.array_equal(np.asarray(image), pixels)


def test_dicom_without_preamble_or_extension(tmp_path):
    path = write_dicom(tmp_path / "plain.dcm", ramp(4, 4, 1000, np.uint16))
    raw = path.read_bytes()
    (tmp_path / "IM0001").write_bytes(raw)
    assert read_medical_image(tmp_path / "IM0001").size == (4, 4)


def test_dicom_without_pixel_data(tmp_path):
    path = write_dicom(tmp_path / "report.dcm", None)
    with pytest.raises(MedicalImageError, match=r"report\.dcm.*no pixel data"):
        read_medical_image(path)


def test_dicom_compressed_without_decoder_names_plugins(tmp_path):
    path = write_dicom(tmp_path / "jls.dcm", ramp(4, 4, 1000, np.uint16), transfer_syntax=JPEGLSLossless)
    with pytest.raises(MedicalImageError, match=r"jls\.dcm.*JPEG-LS Lossless.*could not be decoded") as error:
        read_medical_image(path)
    assert "pylibjpeg" in str(error.value) or "gdcm" in str(error.value) or "Details" in str(error.value)


def test_corrupt_truncated_and_missing_files(tmp_path):
    (tmp_path / "noise.png").write_bytes(np.random.default_rng(0).bytes(300))
    buffer = io.BytesIO()
    Image.fromarray(ramp(200, 200, 255, np.uint8)).save(buffer, format="PNG")
    (tmp_path / "cut.png").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    dicom = write_dicom(tmp_path / "cut.dcm", ramp(64, 64, 1000, np.uint16)).read_bytes()
    (tmp_path / "cut.dcm").write_bytes(dicom[:-2000])
    with pytest.raises(MedicalImageError, match=r"noise\.png.*not a recognised image"):
        read_medical_image(tmp_path / "noise.png")
    with pytest.raises(MedicalImageError, match=r"cut\.png.*truncated"):
        read_medical_image(tmp_path / "cut.png")
    with pytest.raises(MedicalImageError, match=r"cut\.dcm"):
        read_medical_image(tmp_path / "cut.dcm")
    with pytest.raises(MedicalImageError, match=r"absent\.png.*cannot open"):
        read_medical_image(tmp_path / "absent.png")


def test_decompression_bombs_are_refused(tmp_path, monkeypatch):
    Image.fromarray(ramp(100, 100, 255, np.uint8)).save(tmp_path / "big.png")
    write_dicom(tmp_path / "big.dcm", ramp(100, 100, 1000, np.uint16))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(MedicalImageError, match=r"big\.png.*decompression bomb"):
        read_medical_image(tmp_path / "big.png")
    with pytest.raises(MedicalImageError, match=r"big\.dcm.*decompression bomb"):
        read_medical_image(tmp_path / "big.dcm")


def test_unsupported_mode_and_source(tmp_path):
    Image.fromarray(np.array([[-5, 70000]], np.int32), mode="I").save(tmp_path / "wide.tif")
    with pytest.raises(MedicalImageError, match=r"wide\.tif.*16-bit range"):
        read_medical_image(tmp_path / "wide.tif")
    with pytest.raises(MedicalImageError, match="unsupported source type"):
        read_medical_image(12345)


def test_palette_with_16_bit_entries_matches_apply_color_lut():
    """examples_palette.dcm indexes 8-bit pixels into a LUT of 16-bit entries: scale by the entries' depth."""
    path = get_testdata_file("examples_palette.dcm")
    dataset = pydicom.dcmread(path)
    assert dataset.RedPaletteColorLookupTableDescriptor[2] == 16 and dataset.BitsStored == 8
    expected = apply_color_lut(dataset.pixel_array, dataset).astype(np.float64) * (255.0 / 65535.0)
    image = read_medical_image(path)
    assert image.mode == "RGB"
    np.testing.assert_allclose(np.asarray(image), expected, atol=0.5 + 1e-6)  # rounding to 8 bits only


# The compressed syntaxes of clinical archives decode out of the box (the project installs pylibjpeg's plugins).
ARCHIVE_SYNTAXES = (JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLosslessSV1, JPEGLSLossless, JPEGLSNearLossless,
                    JPEG2000Lossless, JPEG2000, RLELossless)


@pytest.mark.parametrize("syntax", ARCHIVE_SYNTAXES, ids=lambda uid: uid.name)
def test_archive_transfer_syntaxes_have_a_decoder(syntax):
    assert get_decoder(syntax).is_available, get_decoder(syntax).missing_dependencies


# After min-max scaling: grey images keep float32 precision; colour deeper than 8 bits (16-bit palettes and RGB)
# is rounded to 8 bits, half a level of error, one level of tolerance.
PARITY_TOLERANCE = {"F": 1e-4, "RGB": 1.0 / 255.0}


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns about its deliberately malformed files
def test_every_pydicom_file_with_pixel_data_decodes_like_pydicom_or_is_refused_by_name():
    """Each file decodes to pydicom's reference (min-max scaled), or, exactly where pydicom itself cannot decode
    it with the installed plugins (a corrupt codestream, truncated data, a missing transfer syntax), is refused
    with a MedicalImageError naming the file and the reason."""
    decoded, refused, undecodable = [], [], []
    for path in pydicom_test_files():
        try:
            reference = pydicom_reference(path)
        except Exception:  # noqa: BLE001 - pydicom's own failure is the expectation
            reference, undecodable = "undecodable", undecodable + [path]
        if reference is None:  # no pixel data: not part of the parity
            continue
        try:
            image = read_medical_image(path)
        except MedicalImageError as error:
            assert path in str(error) and error.reason, str(error)
            refused.append(path)
            continue
        assert not isinstance(reference, str), f"{path} decoded although pydicom cannot decode it"
        values = min_max(np.asarray(image))
        assert values.shape == reference.shape, path
        difference = float(np.abs(values - reference).max())
        assert difference <= PARITY_TOLERANCE[image.mode], (path, image.mode, difference)
        decoded.append(path)
    assert refused == undecodable
    # None is refused for want of a decoder: each refused file's syntax is uncompressed or has one installed.
    for path in refused:
        syntax = getattr(pydicom.dcmread(path, force=True).get("file_meta"), "TransferSyntaxUID", None)
        assert syntax is None or not syntax.is_compressed or get_decoder(syntax).is_available, (path, syntax)
    assert len(decoded) > 10 * len(refused), (len(decoded), len(refused))
