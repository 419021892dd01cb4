"""Local contrast normalisation for radiographs: contrast-limited adaptive histogram equalisation
(CLAHE) as OpenCV's `createCLAHE` defines it.

The image is cut into a `tile_grid` of rows x columns equal tiles (an image that the grid does
not divide is first extended at the bottom and right by mirroring, BORDER_REFLECT_101). Each tile
gets a 256-bin histogram whose counts are clipped at `int(clip_limit * pixels per tile / 256)`
(at least 1); the clipped excess is spread over all bins, its remainder one count each on evenly
spaced bins. This caps how much the tile's contrast can be amplified. The clipped cumulative
histogram, scaled to 0-255, is the tile's intensity mapping. Every pixel blends the mappings of
the four nearest tile centres bilinearly, so tiles leave no seams; as in OpenCV, pixel x sits at
x / tile_width - 0.5 in tile-centre units (half a pixel from its geometric centre).

8-bit images go through OpenCV itself (uint8 in, uint8 out). Deeper sources (16-bit PNG, DICOM,
float arrays) are float: they take the same steps in torch, with the mappings kept in float and
read with linear interpolation between bins, so a 12- or 16-bit radiograph is not cut to 256
levels. On 8-bit values the two agree within one grey level: OpenCV rounds its mappings and its
output to integers.

`clip_limit` near 1.0 clips every histogram almost flat, so the mapping stays close to the identity;
larger values equalise more strongly (2-4 is the usual range for chest X-rays).
"""

import cv2
import numpy as np
import torch

_BINS = 256
_FULL_SCALE = 255.0


def local_contrast_normalize(images, tile_grid=(8, 8), clip_limit=2.0):
    """CLAHE on a batch of images on the 0-255 scale.

    Args:
        images (`torch.Tensor`): (N, C, H, W), uint8 or float with values in [0, 255] (floats are
            clamped to it); each channel is equalised on its own (grey radiographs have one).
        tile_grid (`int` or `(rows, cols)`): tiles per axis; clipped to the image size.
        clip_limit (`float`): histogram clip as a multiple of the mean bin count; must be >= 1.

    Returns:
        `torch.Tensor` of the same shape: uint8 for uint8 input, float32 in [0, 255] otherwise.
    """
    if isinstance(tile_grid, int):
        tile_grid = (tile_grid, tile_grid)
    rows, cols = (int(v) for v in tile_grid)
    if rows < 1 or cols < 1:
        raise ValueError(f"local contrast tile_grid must be positive, got {tile_grid}")
    if clip_limit < 1.0:
        raise ValueError(f"local contrast clip_limit must be >= 1.0 (1.0 = no amplification), got {clip_limit}")
    height, width = images.shape[-2:]
    rows, cols = min(rows, height), min(cols, width)
    if images.dtype == torch.uint8:
        return _clahe_opencv(images, rows, cols, clip_limit)
    return _clahe_float(images, rows, cols, clip_limit)


def _clahe_opencv(images, rows, cols, clip_limit):
    # OpenCV's own thread pool defaults to every core: in data-loader workers (torch: one thread each) that would be
    # cores x workers threads per node. It follows torch's setting instead.
    if cv2.getNumThreads() != torch.get_num_threads():
        cv2.setNumThreads(torch.get_num_threads())
    clahe = cv2.createCLAHE(clipLimit=float(clip_limit), tileGridSize=(cols, rows))
    planes = images.detach().cpu().reshape(-1, *images.shape[-2:]).numpy()
    equalised = np.stack([clahe.apply(plane) for plane in planes])
    return torch.from_numpy(equalised).reshape(images.shape).to(images.device)


def _reflect_101(length, extended_length, device):
    """Source index of each position of an axis mirrored past its end without repeating the edge
    (OpenCV's BORDER_REFLECT_101), for any extension."""
    index = torch.arange(extended_length, device=device)
    if length == 1:
        return torch.zeros_like(index)
    period = 2 * (length - 1)
    index = index % period
    return torch.where(index < length, index, period - index)


def _tile_coordinates(length, tile_size, tiles, device):
    """For each pixel along one axis: its two neighbouring tile centres and the weight of the
    second, with OpenCV's float32 arithmetic."""
    centred = torch.arange(length, device=device, dtype=torch.float32) * torch.tensor(
        1.0 / tile_size, dtype=torch.float32) - 0.5
    first = centred.floor()
    weight = centred - first
    first = first.long()
    return first.clamp(min=0), (first + 1).clamp(max=tiles - 1), weight


def _clahe_float(images, rows, cols, clip_limit):
    batch, channels, height, width = images.shape
    planes, tiles = batch * channels, rows * cols
    device = images.device
    values = images.to(torch.float32).clamp(0.0, _FULL_SCALE).reshape(planes, 1, height, width)

    # Equal tiles: when the grid does not divide the image, OpenCV extends both axes, each by
    # grid - size % grid (a whole tile on an axis the grid divides).
    extended = values
    if height % rows or width % cols:
        row_index = _reflect_101(height, height + rows - height % rows, device)
        col_index = _reflect_101(width, width + cols - width % cols, device)
        extended = values[:, :, row_index[:, None], col_index[None, :]]
    tile_height, tile_width = extended.shape[-2] // rows, extended.shape[-1] // cols
    tile_row = torch.arange(extended.shape[-2], device=device) // tile_height
    tile_col = torch.arange(extended.shape[-1], device=device) // tile_width

    # One bincount over (plane, tile, bin) builds every tile histogram of the batch at once.
    tile_of_pixel = tile_row[:, None] * cols + tile_col[None, :]
    plane_offset = torch.arange(planes, device=device)[:, None, None] * tiles
    flat_bins = ((plane_offset + tile_of_pixel) * _BINS + extended[:, 0].round().long()).reshape(-1)
    histograms = torch.bincount(flat_bins, minlength=planes * tiles * _BINS).reshape(planes, tiles, _BINS)

    pixels_per_tile = tile_height * tile_width
    limit = max(int(clip_limit * pixels_per_tile / _BINS), 1)
    excess = (histograms - limit).clamp(min=0).sum(-1, keepdim=True)
    batch_per_bin, remainder = excess // _BINS, excess % _BINS
    # The remainder goes one count each to bins 0, step, 2 * step, ... (step = bins // remainder).
    step = (_BINS // remainder.clamp(min=1)).clamp(min=1)
    bin_index = torch.arange(_BINS, device=device)
    extra = (bin_index % step == 0) & (bin_index // step < remainder)
    histograms = histograms.clamp(max=limit) + batch_per_bin + extra
    lut_scale = torch.tensor((_BINS - 1) / pixels_per_tile, dtype=torch.float32)
    mappings = histograms.cumsum(-1).to(torch.float32) * lut_scale

    # Each pixel reads four tile mappings at its (fractional) bin: mapping[low] + slope[low] * fraction.
    values = values[:, 0]
    low_bin = values.floor().long().clamp_(max=_BINS - 2)
    bin_fraction = values - low_bin
    slopes = torch.diff(mappings, dim=-1, append=mappings[..., -1:])
    flat_mappings, flat_slopes = mappings.reshape(-1), slopes.reshape(-1)
    pixel_base = torch.arange(planes, device=device)[:, None, None] * (tiles * _BINS) + low_bin
    row_first, row_second, row_weight = _tile_coordinates(height, tile_height, rows, device)
    col_first, col_second, col_weight = _tile_coordinates(width, tile_width, cols, device)

    def mapped_through(tile_rows, tile_cols):
        index = pixel_base + (tile_rows[:, None] * cols + tile_cols[None, :]) * _BINS
        return torch.addcmul(flat_mappings.take(index), flat_slopes.take(index), bin_fraction)

    column_weight = col_weight[None, None, :]
    top = torch.lerp(mapped_through(row_first, col_first), mapped_through(row_first, col_second), column_weight)
    bottom = torch.lerp(mapped_through(row_second, col_first), mapped_through(row_second, col_second), column_weight)
    blended = torch.lerp(top, bottom, row_weight[None, :, None])
    return blended.clamp_(0.0, _FULL_SCALE).reshape(batch, channels, height, width)


__all__ = ["local_contrast_normalize"]
