"""Reading medical images (JPG, 8/16-bit PNG, DICOM) into PIL images without losing precision.

Intermediate representation
---------------------------
`read_medical_image` always returns a PIL image, in one of three modes:

- ``"L"`` / ``"RGB"``: 8-bit sources (JPG, 8-bit PNG, 8-bit colour DICOM) exactly as stored.
- ``"F"`` (32-bit float, one channel): grey sources with more than 8 bits (16-bit PNG, every grey
  DICOM). Values lie on the **0-255 scale of an 8-bit image but keep their fractions**, so a
  12- or 16-bit radiograph is never quantised to 256 levels before the final normalisation, and
  the image processor's usual `rescale_factor` (1/255) applies to every source alike.

Grey DICOMs go through the modality LUT (rescale slope/intercept), then the VOI LUT sequence or
the first window centre/width (LINEAR, LINEAR_EXACT or SIGMOID), or, with neither, the image's
own min-max range; MONOCHROME1 is inverted so that bright always means dense. Multi-frame files
give their first frame. Every failure raises `MedicalImageError` naming the file and the reason.
"""

import io
import os
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

try:  # pydicom is optional where the processor travels: only DICOM sources need it.
    import pydicom
    from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, get_decoder

    _PYDICOM_AVAILABLE = True
except ImportError:  # pragma: no cover - exercised only without pydicom installed
    _PYDICOM_AVAILABLE = False

# PIL modes returned unchanged, and those converted to one of them.
_KEPT_MODES = ("L", "RGB", "F")
_MODE_CONVERSIONS = {
    "1": "L",
    "LA": "L",
    "La": "L",
    "P": "RGB",
    "PA": "RGB",
    "RGBA": "RGB",
    "RGBa": "RGB",
    "RGBX": "RGB",
    "CMYK": "RGB",
    "YCbCr": "RGB",
    "LAB": "RGB",
    "HSV": "RGB",
}
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")
_TO_EIGHT_BIT_SCALE = 255.0 / 65535.0
_PIXEL_DATA_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


class MedicalImageError(ValueError):
    """An image that cannot be read: the message names the file and the reason."""

    def __init__(self, source_name, reason):
        self.source_name = source_name
        self.reason = reason
        super().__init__(f"cannot read image {source_name}: {reason}")


def _describe_source(source):
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes>"
    return str(getattr(source, "name", "<stream>"))


def _open_binary(source, name):
    """Return (readable binary stream, whether it was opened here)."""
    if isinstance(source, (str, os.PathLike)):
        try:
            return open(source, "rb"), True
        except OSError as error:
            raise MedicalImageError(name, f"cannot open file ({error.strerror or error})") from error
    if isinstance(source, (bytes, bytearray, memoryview)):
        return io.BytesIO(bytes(source)), True
    if hasattr(source, "read") and hasattr(source, "seek"):
        return source, False
    raise MedicalImageError(name, f"unsupported source type {type(source).__name__} (expected a path, bytes or a file)")


def _has_dicom_magic(stream):
    start = stream.tell()
    header = stream.read(132)
    stream.seek(start)
    return header[128:132] == b"DICM"


def read_medical_image(source):
    """Read a JPG, 8/16-bit PNG (or any PIL-readable image) or DICOM file into a PIL image.

    Args:
        source: a path (`str` / `os.PathLike`), raw `bytes`, or a binary file object.

    Returns:
        `PIL.Image.Image` in mode "L", "RGB", or "F" (float, 0-255 scale, see the module docstring).

    Raises:
        MedicalImageError: corrupt or truncated files, DICOMs without pixel data or whose compressed
            transfer syntax has no installed decoder (the missing plugins are named), unsupported
            modes, and images over PIL's decompression-bomb limit.
    """
    name = _describe_source(source)
    stream, opened_here = _open_binary(source, name)
    try:
        has_magic = _has_dicom_magic(stream)
        if has_magic or name.lower().endswith((".dcm", ".dicom")):
            # Files without the 128-byte preamble and "DICM" magic are legal DICOM too: read them forcibly.
            return _read_dicom(stream, name, force=not has_magic)
        try:
            return _read_with_pil(stream, name)
        except MedicalImageError as pil_error:
            if not isinstance(pil_error.__cause__, UnidentifiedImageError):
                raise
            # DICOMs without the preamble and without a .dcm name are only recognisable by parsing.
            stream.seek(0)
            return _read_dicom(stream, name, force=True, unrecognised=pil_error)
    finally:
        if opened_here:
            stream.close()


def _read_with_pil(stream, name):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(stream)
            image.load()
    except Image.DecompressionBombError as error:
        raise MedicalImageError(name, f"decompression bomb refused: {error}") from error
    except UnidentifiedImageError as error:
        raise MedicalImageError(name, "not a recognised image format (neither PIL-readable nor DICOM)") from error
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise MedicalImageError(name, f"corrupt or truncated image ({error})") from error
    return _to_supported_mode(image, name)


def _to_supported_mode(image, name):
    mode = image.mode
    if mode in _KEPT_MODES:
        return image
    if mode in _MODE_CONVERSIONS:
        return image.convert(_MODE_CONVERSIONS[mode])
    if mode in _SIXTEEN_BIT_MODES:
        values = np.asarray(image).astype(np.float32)
        values *= np.float32(_TO_EIGHT_BIT_SCALE)
        return Image.fromarray(values, mode="F")
    if mode == "I":
        values = np.asarray(image)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise MedicalImageError(name, "32-bit integer image outside the 16-bit range 0..65535 is not supported")
        return Image.fromarray(values.astype(np.float32) * np.float32(_TO_EIGHT_BIT_SCALE), mode="F")
    raise MedicalImageError(name, f"unsupported image mode {mode!r}")


def _read_dicom(stream, name, force, unrecognised=None):
    """Decode a DICOM; with `unrecognised` set, a file that turns out not to be DICOM re-raises that error."""
    if not _PYDICOM_AVAILABLE:
        raise MedicalImageError(name, "reading DICOM needs pydicom: `pip install pydicom`")
    try:
        dataset = pydicom.dcmread(stream, force=force)
    except Exception as error:  # pydicom raises many types for malformed files
        if unrecognised is not None:
            raise unrecognised
        raise MedicalImageError(name, f"corrupt or truncated DICOM ({type(error).__name__}: {error})") from error
    if not any(keyword in dataset for keyword in _PIXEL_DATA_KEYWORDS):
        if unrecognised is not None:
            raise unrecognised
        raise MedicalImageError(name, "DICOM has no pixel data (e.g. a DICOMDIR, report or structure set)")
    _refuse_dicom_bomb(dataset, name)
    frame = _decode_first_frame(dataset, name)
    # Colour depth: the stored bits, or for a palette the bits of its entries (8-bit indices often map to 16-bit).
    colour_bits = int(dataset.get("BitsStored", 8 * frame.dtype.itemsize))
    if str(dataset.get("PhotometricInterpretation", "")).strip() == "PALETTE COLOR":
        frame, colour_bits = _apply_palette(frame, dataset, name)
    if int(dataset.get("SamplesPerPixel", 1)) == 1 and frame.ndim == 2:
        return Image.fromarray(_grey_dicom_to_unit_range(frame, dataset, name) * np.float32(255.0), mode="F")
    return _colour_dicom_to_pil(frame, colour_bits, name)


def _refuse_dicom_bomb(dataset, name):
    rows, columns = int(dataset.get("Rows", 0) or 0), int(dataset.get("Columns", 0) or 0)
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and rows * columns > 2 * limit:
        raise MedicalImageError(
            name, f"decompression bomb refused: {rows}x{columns} pixels exceeds twice PIL's limit of {limit}"
        )


def _decode_first_frame(dataset, name):
    try:
        pixels = dataset.pixel_array
    except Exception as error:  # decoder and length errors arrive as RuntimeError/ValueError/NotImplementedError
        raise MedicalImageError(name, _decode_failure_reason(dataset, error)) from error
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    return pixels[0] if frames > 1 else pixels


def _decode_failure_reason(dataset, error):
    transfer_syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
    if transfer_syntax is not None and transfer_syntax.is_compressed:
        decoder = get_decoder(transfer_syntax)
        if not decoder.is_available or "Unable to decode" in str(error):
            missing = "; ".join(decoder.missing_dependencies) or "no plugin supports this file"
            return (
                f"compressed transfer syntax '{transfer_syntax.name}' ({transfer_syntax}) could not be decoded: "
                f"install a decoder plugin ({missing}). Details: {error}"
            )
    return f"cannot decode pixel data ({type(error).__name__}: {error})"


def _apply_palette(frame, dataset, name):
    """The RGB frame and its depth: the entry bits of the red LUT descriptor (PS3.3 C.7.6.3.1.5), 8 or 16."""
    try:
        return apply_color_lut(frame, dataset), int(dataset.RedPaletteColorLookupTableDescriptor[2])
    except Exception as error:
        reason = f"invalid palette colour lookup table ({type(error).__name__}: {error})"
        raise MedicalImageError(name, reason) from error


def _grey_dicom_to_unit_range(frame, dataset, name):
    """Modality LUT, then VOI LUT / window / min-max to [0, 1], then MONOCHROME1 inversion."""
    try:
        values = np.asarray(apply_modality_lut(frame, dataset), dtype=np.float64)
        if "VOILUTSequence" in dataset and len(dataset.VOILUTSequence):
            unit = _apply_voi_lut_sequence(values, dataset)
        elif "WindowCenter" in dataset and "WindowWidth" in dataset:
            unit = _apply_window(values, dataset)
        else:
            unit = _min_max(values)
    except MedicalImageError:
        raise
    except Exception as error:  # malformed LUT descriptors and the like
        raise MedicalImageError(name, f"invalid DICOM intensity transform ({type(error).__name__}: {error})") from error
    if str(dataset.get("PhotometricInterpretation", "")).strip() == "MONOCHROME1":
        unit = 1.0 - unit
    return unit.astype(np.float32)


def _apply_voi_lut_sequence(values, dataset):
    lut_values = np.asarray(dataset.VOILUTSequence[0].LUTData, dtype=np.float64)
    # A VOI LUT is indexed by integer modality values.
    indices = np.rint(values).astype(np.int64)
    mapped = np.asarray(apply_voi_lut(indices, dataset, index=0, prefer_lut=True), dtype=np.float64)
    low, high = lut_values.min(), lut_values.max()
    if high <= low:
        return np.zeros_like(mapped)
    return np.clip((mapped - low) / (high - low), 0.0, 1.0)


def _first_value(element):
    return float(element[0]) if isinstance(element, (list, tuple, pydicom.multival.MultiValue)) else float(element)


def _apply_window(values, dataset):
    """DICOM PS3.3 C.11.2.1.2 windowing straight to [0, 1] (no detour through the stored bit depth)."""
    center, width = _first_value(dataset.WindowCenter), _first_value(dataset.WindowWidth)
    function = str(dataset.get("VOILUTFunction", "LINEAR")).strip().upper() or "LINEAR"
    if function == "SIGMOID":
        if width <= 0:
            return _min_max(values)
        return 1.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    if function == "LINEAR_EXACT":
        if width <= 0:
            return _min_max(values)
        return np.clip((values - center) / width + 0.5, 0.0, 1.0)
    if width < 1:  # the standard forbids it for LINEAR; fall back rather than divide by zero
        return _min_max(values)
    if width == 1:
        return (values > center - 0.5).astype(np.float64)
    return np.clip((values - (center - 0.5)) / (width - 1.0) + 0.5, 0.0, 1.0)


def _min_max(values):
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros_like(values, dtype=np.float64)
    return (values - low) / (high - low)


def _colour_dicom_to_pil(frame, bits, name):
    if frame.ndim != 3 or frame.shape[-1] != 3:
        raise MedicalImageError(name, f"unsupported DICOM pixel layout {frame.shape} (expected H x W x 3 colour)")
    if frame.dtype == np.uint8:
        return Image.fromarray(frame, mode="RGB")
    # PIL has no float RGB mode: deeper colour is scaled to 8 bits (colour radiographs are rare).
    scaled = np.clip(frame.astype(np.float64) / (2.0**bits - 1.0), 0.0, 1.0) * 255.0
    return Image.fromarray(np.round(scaled).astype(np.uint8), mode="RGB")


__all__ = ["MedicalImageError", "read_medical_image"]
