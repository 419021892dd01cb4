"""MedVL's image processor: radiographs from files (JPG, 8/16-bit PNG, DICOM), PIL images or arrays
to normalised `pixel_values` (B, 3, H, W) float32.

Pipeline per image (torch, batched where shapes agree):
  read/convert to the 0-255 scale, 1 or 3 channels: 8-bit sources as uint8, deeper ones (16-bit
  PNG, DICOM) as float32, never quantised to 8 bits
  -> resize to `size` by `resize_mode` ("squash": stretch to size; "pad": keep the aspect ratio,
     fit inside size); 8-bit sources are resampled in uint8, as CLIP's processor does
  -> optional local contrast normalisation (CLAHE, see `local_contrast_medvl.py`; OpenCV's, in uint8,
     on 8-bit sources), at the resized resolution so its tile grid means the same for every source
     size; float32 from here on
  -> "pad" mode: centre on a black canvas of `size`
  -> grey to 3 channels (after resizing: a third of the work), rescale and normalise with mean/std.

Sources reach the same pipeline through one conversion, so an image gives the same output
whether it arrives as a file, a PIL image or an array: uint8 as is, uint16 scaled by 255/65535
(as 16-bit PNGs are read), bool to 0/255, and other numbers taken to be on the 0-255 scale already
(the transformers convention that `rescale_factor` then applies to).
"""

import os

import numpy as np
import torch
from PIL import Image
from transformers.image_processing_backends import TorchvisionBackend
from transformers.image_processing_base import BatchFeature
from transformers.image_transforms import group_images_by_shape, reorder_images
from transformers.image_utils import (
    IMAGENET_DEFAULT_MEAN,
    IMAGENET_DEFAULT_STD,
    ChannelDimension,
    PILImageResampling,
    SizeDict,
    infer_channel_dimension_format,
)
from transformers.processing_utils import ImagesKwargs

from .image_io_medvl import MedicalImageError, _to_supported_mode, read_medical_image
from .local_contrast_medvl import local_contrast_normalize

RESIZE_MODES = ("squash", "pad")
_SIXTEEN_BIT_TO_EIGHT = 255.0 / 65535.0
_PATH_TYPES = (str, os.PathLike, bytes, bytearray)


class MedVLImageProcessorKwargs(ImagesKwargs, total=False):
    r"""
    resize_mode (`str`, *optional*, defaults to `"squash"`):
        `"squash"` resizes to `size` exactly; `"pad"` keeps the aspect ratio, fits the image inside
        `size` and pads the rest with black (centred).
    do_local_contrast (`bool`, *optional*, defaults to `False`):
        Apply contrast-limited adaptive histogram equalisation (CLAHE) after resizing.
    local_contrast_tile_grid (`int` or `list[int]`, *optional*, defaults to 8):
        CLAHE tiles per axis: one int for a square grid, or `[rows, cols]`.
    local_contrast_clip_limit (`float`, *optional*, defaults to 2.0):
        CLAHE histogram clip as a multiple of the mean bin count (>= 1; larger equalises more).
    """

    resize_mode: str | None
    do_local_contrast: bool | None
    local_contrast_tile_grid: int | list[int] | tuple[int, ...] | None
    local_contrast_clip_limit: float | None


class MedVLImageProcessor(TorchvisionBackend):
    r"""
    Image processor for MedVL. Accepts PIL images, numpy arrays and torch tensors (H x W, H x W x C
    or C x H x W), and file paths / bytes of JPG, PNG (8 or 16 bit) and DICOM files, one at a time
    or as a list. Returns `pixel_values` (B, 3, H, W) float32.

    Args:
        size (`int` or `dict`, defaults to `{"height": 384, "width": 384}`): output size (MedVL's
            backbones use 336, 384 or 512).
        resize_mode (`str`, defaults to `"squash"`): `"squash"` or aspect-preserving `"pad"`.
        do_local_contrast (`bool`, defaults to `False`), local_contrast_tile_grid (defaults to 8),
        local_contrast_clip_limit (defaults to 2.0): CLAHE, see `MedVLImageProcessorKwargs`.
        image_mean, image_std (defaults to ImageNet's): normalisation after rescaling to [0, 1].
        Other arguments as in transformers' image processors (`do_resize`, `resample`,
        `do_rescale`, `rescale_factor`, `do_normalize`, `do_convert_rgb`).
    """

    valid_kwargs = MedVLImageProcessorKwargs
    model_input_names = ["pixel_values"]

    size = {"height": 384, "width": 384}
    resample = PILImageResampling.BICUBIC
    do_resize = True
    do_rescale = True
    do_normalize = True
    do_convert_rgb = True
    image_mean = IMAGENET_DEFAULT_MEAN
    image_std = IMAGENET_DEFAULT_STD
    resize_mode = "squash"
    do_local_contrast = False
    local_contrast_tile_grid = 8
    local_contrast_clip_limit = 2.0

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        _check_options(self.resize_mode, self.local_contrast_tile_grid, self.local_contrast_clip_limit)

    def fetch_images(self, image_url_or_urls):
        """Inputs pass through unchanged: paths and bytes (DICOM included) are read one by one while
        preparing, so that a file that cannot be read is reported with its index in the batch."""
        return image_url_or_urls

    def _prepare_image_like_inputs(
        self, images, *args, do_convert_rgb=None, input_data_format=None, device=None, **kwargs
    ):
        """Flatten the input to a list and convert each item, naming the item in any error."""
        prepared = []
        for index, item in enumerate(_flatten_images(images)):
            try:
                if isinstance(item, _PATH_TYPES):
                    item = read_medical_image(item)
                tensor = _to_chw(item, input_data_format)
            except MedicalImageError as error:
                raise MedicalImageError(f"at index {index} ({error.source_name})", error.reason) from error
            except (TypeError, ValueError) as error:
                raise ValueError(f"image at index {index}: {error}") from error
            prepared.append(tensor.to(device) if device is not None else tensor)
        if not prepared:
            raise ValueError("no images given: expected an image, a file path or a list of them")
        return prepared

    def _preprocess(
        self,
        images,
        do_resize,
        size,
        resample,
        do_rescale,
        rescale_factor,
        do_normalize,
        image_mean,
        image_std,
        disable_grouping,
        return_tensors,
        do_convert_rgb=True,
        resize_mode="squash",
        do_local_contrast=False,
        local_contrast_tile_grid=8,
        local_contrast_clip_limit=2.0,
        do_center_crop=False,
        crop_size=None,
        do_pad=False,
        data_format=ChannelDimension.FIRST,
        **kwargs,
    ):
        _check_options(resize_mode, local_contrast_tile_grid, local_contrast_clip_limit)
        if do_pad:
            raise ValueError("do_pad is not supported: use resize_mode='pad' (aspect-preserving fit inside `size`)")
        options = dict(
            do_resize=do_resize, size=size, resample=resample, resize_mode=resize_mode,
            do_center_crop=do_center_crop, crop_size=crop_size,
            do_local_contrast=do_local_contrast, local_contrast_tile_grid=local_contrast_tile_grid,
            local_contrast_clip_limit=local_contrast_clip_limit, do_convert_rgb=do_convert_rgb,
            do_rescale=do_rescale, rescale_factor=rescale_factor, do_normalize=do_normalize,
            image_mean=image_mean, image_std=image_std,
        )  # fmt: skip
        processed_images = [None] * len(images)
        # uint8 (8-bit sources) and float images are stacked apart: grouping goes by shape only.
        for dtype in {image.dtype for image in images}:
            indices = [index for index, image in enumerate(images) if image.dtype == dtype]
            subset = [images[i] for i in indices]
            grouped, grouped_index = group_images_by_shape(subset, disable_grouping=disable_grouping)
            processed = {shape: self._process_stack(stacked, **options) for shape, stacked in grouped.items()}
            for index, image in zip(indices, reorder_images(processed, grouped_index)):
                processed_images[index] = image
        if data_format is not None and ChannelDimension(data_format) == ChannelDimension.LAST:
            processed_images = [image.permute(1, 2, 0) for image in processed_images]
        if return_tensors and len({tuple(image.shape) for image in processed_images}) == 1:
            processed_images = torch.stack(processed_images)
        return BatchFeature(data={"pixel_values": processed_images}, tensor_type=return_tensors)

    def _process_stack(
        self, stacked, do_resize, size, resample, resize_mode, do_center_crop, crop_size, do_local_contrast,
        local_contrast_tile_grid, local_contrast_clip_limit, do_convert_rgb, do_rescale, rescale_factor, do_normalize,
        image_mean, image_std,
    ):  # fmt: skip
        """Resize, CLAHE, pad, crop, 3 channels, rescale + normalise a stack (N, C, H, W) of equal images."""
        canvas = None
        if do_resize:
            target = (size.height, size.width)
            if resize_mode == "pad":
                canvas, target = target, _fit_inside(stacked.shape[-2:], target)
            stacked = self.resize(stacked, SizeDict(height=target[0], width=target[1]), resample=resample)
        if do_local_contrast:  # before float32: 8-bit stacks go through OpenCV in uint8
            stacked = local_contrast_normalize(stacked, local_contrast_tile_grid, local_contrast_clip_limit)
        # float32 from here on; bicubic overshoot on float sources would escape the source range.
        stacked = stacked.to(torch.float32).clamp_(0.0, 255.0)
        if canvas is not None:
            stacked = _pad_to_centre(stacked, canvas)
        if do_center_crop:
            stacked = self.center_crop(stacked, crop_size)
        if do_convert_rgb:
            stacked = _to_three_channels(stacked)
        stacked = self.rescale_and_normalize(stacked, do_rescale, rescale_factor, do_normalize, image_mean, image_std)
        return stacked.to(torch.float32)


def _check_options(resize_mode, tile_grid, clip_limit):
    if resize_mode not in RESIZE_MODES:
        raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, got {resize_mode!r}")
    grid = [tile_grid] if isinstance(tile_grid, int) else list(tile_grid)
    if len(grid) not in (1, 2) or any(not isinstance(v, int) or v < 1 for v in grid):
        raise ValueError(f"local_contrast_tile_grid must be a positive int or [rows, cols], got {tile_grid!r}")
    if clip_limit is None or clip_limit < 1.0:
        raise ValueError(f"local_contrast_clip_limit must be >= 1.0, got {clip_limit!r}")


def _flatten_images(images):
    """A single image, a list of images, or a list of per-sample lists (one level of nesting)."""
    if not isinstance(images, (list, tuple)):
        return [images]
    flat = []
    for item in images:
        flat.extend(item if isinstance(item, (list, tuple)) else [item])
    return flat


def _to_chw(image, input_data_format=None):
    """Any supported image to a (C, H, W) tensor on the 0-255 scale, C in {1, 2, 3, 4}: uint8 for
    8-bit sources, float32 otherwise."""
    if isinstance(image, Image.Image):
        image = _to_supported_mode(image, "<PIL image>")
        array = np.asarray(image)
        layout = ChannelDimension.LAST
    elif isinstance(image, (np.ndarray, torch.Tensor)):
        array = image.detach().cpu() if isinstance(image, torch.Tensor) else image
        layout = input_data_format
    else:
        raise TypeError(
            f"unsupported image type {type(image).__name__}: expected a PIL image, numpy array, torch tensor, "
            "file path or bytes"
        )
    tensor = _to_working_tensor(array)
    if tensor.ndim == 4 and tensor.shape[0] == 1:
        tensor = tensor[0]
    if tensor.ndim == 2:
        return tensor.unsqueeze(0).contiguous()
    if tensor.ndim != 3:
        raise ValueError(f"expected a 2-D or 3-D image, got shape {tuple(tensor.shape)}")
    if layout is None:
        layout = infer_channel_dimension_format(tensor, num_channels=(1, 2, 3, 4))
    if ChannelDimension(layout) == ChannelDimension.LAST:
        tensor = tensor.permute(2, 0, 1)
    if tensor.shape[0] not in (1, 2, 3, 4) or 0 in tensor.shape:
        raise ValueError(f"expected 1-4 channels and a non-empty image, got shape {tuple(tensor.shape)}")
    return tensor.contiguous()


def _to_working_tensor(array):
    """uint8 stays uint8 (8-bit sources are resampled in 8 bits, as CLIP's processor does, at a third
    of the float cost); every other dtype becomes float32 on the 0-255 scale."""
    if isinstance(array, np.ndarray):
        if array.dtype == np.uint8:
            return torch.from_numpy(np.array(array))  # a copy: later steps never touch the caller's data
        if array.dtype == np.uint16:
            return torch.from_numpy(array.astype(np.float32) * np.float32(_SIXTEEN_BIT_TO_EIGHT))
        if array.dtype == np.bool_:
            return torch.from_numpy(array.astype(np.float32) * np.float32(255.0))
        if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
            raise TypeError(f"unsupported array dtype {array.dtype}")
        tensor = torch.from_numpy(array.astype(np.float32))
    else:
        if array.dtype == torch.uint8:
            return array.clone()
        if array.dtype == torch.uint16:
            return array.to(torch.float32) * _SIXTEEN_BIT_TO_EIGHT
        if array.dtype == torch.bool:
            return array.to(torch.float32) * 255.0
        if array.is_complex():
            raise TypeError(f"unsupported tensor dtype {array.dtype}")
        tensor = array.to(torch.float32)
    if not torch.isfinite(tensor).all():
        raise ValueError("image contains NaN or infinite values")
    return tensor


def _fit_inside(source_hw, target_hw):
    """Largest size with the source's aspect ratio that fits inside the target."""
    scale = min(target_hw[0] / source_hw[0], target_hw[1] / source_hw[1])
    return (
        max(1, min(target_hw[0], round(source_hw[0] * scale))),
        max(1, min(target_hw[1], round(source_hw[1] * scale))),
    )


def _pad_to_centre(images, canvas_hw):
    height, width = images.shape[-2:]
    top, left = (canvas_hw[0] - height) // 2, (canvas_hw[1] - width) // 2
    padding = (left, canvas_hw[1] - width - left, top, canvas_hw[0] - height - top)
    return torch.nn.functional.pad(images, padding, value=0.0)


def _to_three_channels(images):
    channels = images.shape[-3]
    if channels == 1:
        return images.expand(*images.shape[:-3], 3, *images.shape[-2:])
    if channels == 2:  # grey + alpha
        return images[..., :1, :, :].expand(*images.shape[:-3], 3, *images.shape[-2:])
    return images[..., :3, :, :]


MedVLImageProcessor.register_for_auto_class("AutoImageProcessor")

__all__ = ["MedVLImageProcessor", "MedVLImageProcessorKwargs"]
