"""Small DICOM files written with pydicom for the image tests, and pydicom's own test files with its reference decoding."""

import os
import warnings

import numpy as np
import pydicom
from pydicom.data import get_testdata_files
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid


def write_dicom(path, pixels=None, transfer_syntax=ExplicitVRLittleEndian, **elements):
    """Write `pixels` (H x W, F x H x W, or H x W x 3 uint8 for RGB) as a DICOM; `elements` set or
    override data elements by keyword (e.g. PhotometricInterpretation, RescaleSlope, WindowCenter)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = transfer_syntax
    dataset = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    dataset.SOPClassUID = SecondaryCaptureImageStorage
    dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    dataset.Modality = "DX"
    if pixels is not None:
        pixels = np.asarray(pixels)
        colour = pixels.ndim == 3 and pixels.shape[-1] == 3 and pixels.dtype == np.uint8
        frames = 1 if colour or pixels.ndim == 2 else pixels.shape[0]
        dataset.Rows, dataset.Columns = pixels.shape[-3:-1] if colour else pixels.shape[-2:]
        dataset.SamplesPerPixel = 3 if colour else 1
        dataset.PhotometricInterpretation = "RGB" if colour else "MONOCHROME2"
        if colour:
            dataset.PlanarConfiguration = 0
        if frames > 1:
            dataset.NumberOfFrames = frames
        bits = 8 * pixels.dtype.itemsize
        dataset.BitsAllocated = bits
        dataset.BitsStored = bits
        dataset.HighBit = bits - 1
        dataset.PixelRepresentation = 1 if np.issubdtype(pixels.dtype, np.signedinteger) else 0
        dataset.PixelData = pixels.tobytes()
    for keyword, value in elements.items():
        setattr(dataset, keyword, value)
    if transfer_syntax.is_compressed and pixels is not None:
        # A bogus codestream: decoding must fail, whether or not a decoder plugin is installed.
        dataset.PixelData = pydicom.encaps.encapsulate([b"\x00" * 64])
        dataset["PixelData"].VR = "OB"
        dataset["PixelData"].is_undefined_length = True
    dataset.save_as(path, enforce_file_format=True)
    return path


def pydicom_test_files():
    """Every data file pydicom ships (its sub-folders included; nothing is downloaded)."""
    return sorted(path for path in get_testdata_files() if os.path.isfile(path))


def pydicom_reference(path):
    """pydicom's own decoding of `path`'s first frame on a 0-1 scale (min-max), or None without pixel data.

    Grey: `apply_modality_lut` then `apply_voi_lut`, MONOCHROME1 inverted. Colour: `pixel_array` (YBR already
    converted to RGB), palettes through `apply_color_lut`. Raises whatever pydicom raises for an undecodable file."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about its deliberately malformed files
        try:
            dataset = pydicom.dcmread(path, force=True)
        except Exception:
            return None
        if not any(keyword in dataset for keyword in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
            return None
        pixels = dataset.pixel_array
        if int(dataset.get("NumberOfFrames", 1) or 1) > 1:
            pixels = pixels[0]
        photometric = str(dataset.get("PhotometricInterpretation", "")).strip()
        if photometric == "PALETTE COLOR":
            values = apply_color_lut(pixels, dataset)
        elif pixels.ndim == 2:
            values = apply_voi_lut(apply_modality_lut(pixels, dataset), dataset)
            if photometric == "MONOCHROME1":
                values = -np.asarray(values, dtype=np.float64)
        else:
            values = pixels
    return min_max(values)


def min_max(values):
    values = np.asarray(values, dtype=np.float64)
    low, high = values.min(), values.max()
    return (values - low) / (high - low) if high > low else np.zeros_like(values)
