"""Local contrast normalisation for radiographs: contrast-limited adaptive histogram equalisation
(CLAHE), vectorised in torch over a batch of float images.

The image is cut into a `tile_grid` of rows x columns tiles. Each tile gets a histogram of
`num_bins` bins whose counts are clipped at `clip_limit` times the mean count per bin (the excess
is spread evenly over all bins, which caps how much the tile's contrast can be amplified); the
clipped cumulative histogram is the tile's intensity mapping. Every pixel blends the mappings of
the four nearest tile centres bilinearly, so tiles leave no seams. Mappings are read with linear
interpolation between bins, so a 12- or 16-bit radiograph is not cut to `num_bins` levels.

`clip_limit` near 1.0 clips every histogram almost flat, so the mapping stays close to the identity;
larger values equalise more strongly (2-4 is the usual range for chest X-rays).
"""

import torch

_FULL_SCALE = 255.0


def _tile_coordinates(length, tiles, device):
    """For each pixel along one axis: the tile it belongs to, and its two neighbouring tile centres
    with the weight of the second (bilinear blending between tile mappings)."""
    positions = torch.arange(length, device=device, dtype=torch.float32)
    own_tile = torch.div(positions * tiles, length, rounding_mode="floor").long().clamp_(max=tiles - 1)
    centred = (positions + 0.5) * tiles / length - 0.5
    first = centred.floor().clamp(0, tiles - 1)
    weight = (centred - first).clamp(0.0, 1.0)
    first = first.long()
    second = (first + 1).clamp(max=tiles - 1)
    return own_tile, first, second, weight


def local_contrast_normalize(images, tile_grid=(8, 8), clip_limit=2.0, num_bins=256):
    """CLAHE on a batch of images on the 0-255 scale.

    Args:
        images (`torch.Tensor`): float tensor (N, C, H, W), values in [0, 255]; each channel is
            equalised on its own (grey radiographs have one).
        tile_grid (`int` or `(rows, cols)`): tiles per axis; clipped to the image size.
        clip_limit (`float`): histogram clip as a multiple of the mean bin count; must be >= 1.
        num_bins (`int`): histogram bins.

    Returns:
        `torch.Tensor` of the same shape, float32 in [0, 255].
    """
    if isinstance(tile_grid, int):
        tile_grid = (tile_grid, tile_grid)
    rows, cols = (int(v) for v in tile_grid)
    if rows < 1 or cols < 1:
        raise ValueError(f"local contrast tile_grid must be positive, got {tile_grid}")
    if clip_limit < 1.0:
        raise ValueError(f"local contrast clip_limit must be >= 1.0 (1.0 = no amplification), got {clip_limit}")
    batch, channels, height, width = images.shape
    rows, cols = min(rows, height), min(cols, width)
    planes, tiles = batch * channels, rows * cols
    device = images.device

    values = images.to(torch.float32).clamp(0.0, _FULL_SCALE).reshape(planes, height, width)
    bin_position = values * ((num_bins - 1) / _FULL_SCALE)

    row_tile, row_first, row_second, row_weight = _tile_coordinates(height, rows, device)
    col_tile, col_first, col_second, col_weight = _tile_coordinates(width, cols, device)

    # One bincount over (plane, tile, bin) builds every tile histogram of the batch at once.
    tile_of_pixel = row_tile[:, None] * cols + col_tile[None, :]
    plane_offset = torch.arange(planes, device=device)[:, None, None] * tiles
    flat_bins = ((plane_offset + tile_of_pixel) * num_bins + bin_position.round().long()).reshape(-1)
    histograms = torch.bincount(flat_bins, minlength=planes * tiles * num_bins).reshape(planes, tiles, num_bins)
    histograms = histograms.to(torch.float32)
    pixels_per_tile = histograms[0].sum(-1)  # identical across planes

    limit = (clip_limit * pixels_per_tile / num_bins).clamp(min=1.0)[None, :, None]
    excess = (histograms - limit).clamp(min=0.0).sum(-1, keepdim=True)
    histograms = histograms.clamp(max=limit) + excess / num_bins
    mappings = histograms.cumsum(-1) / pixels_per_tile[None, :, None] * _FULL_SCALE

    # Each pixel reads four tile mappings at its (fractional) bin: mapping[low] + slope[low] * fraction.
    low_bin = bin_position.floor().long().clamp_(max=max(num_bins - 2, 0))
    bin_fraction = bin_position - low_bin
    slopes = torch.diff(mappings, dim=-1, append=mappings[..., -1:])
    flat_mappings, flat_slopes = mappings.reshape(-1), slopes.reshape(-1)
    pixel_base = torch.arange(planes, device=device)[:, None, None] * (tiles * num_bins) + low_bin

    def mapped_through(tile_rows, tile_cols):
        index = pixel_base + (tile_rows[:, None] * cols + tile_cols[None, :]) * num_bins
        return torch.addcmul(flat_mappings.take(index), flat_slopes.take(index), bin_fraction)

    column_weight = col_weight[None, None, :]
    top = torch.lerp(mapped_through(row_first, col_first), mapped_through(row_first, col_second), column_weight)
    bottom = torch.lerp(mapped_through(row_second, col_first), mapped_through(row_second, col_second), column_weight)
    blended = torch.lerp(top, bottom, row_weight[None, :, None])
    return blended.clamp_(0.0, _FULL_SCALE).reshape(batch, channels, height, width)


__all__ = ["local_contrast_normalize"]
