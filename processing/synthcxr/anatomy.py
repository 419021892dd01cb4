"""Normal chest anatomy for SynthCXR: sampled geometry and the masks a renderer needs.

Coordinates are normalised to the image: x and y run from 0 to 1, x from the image's left to
its right and y from top to bottom. Radiological convention: the patient faces the viewer, so
the patient's RIGHT lung is on the image's LEFT (small x) and the patient's LEFT is on the
image's RIGHT. Every side named in this package is the patient's side.

Each lung has its own frame (u, v): u is -1 at the medial edge and +1 at the lateral chest
wall, v is 0 at the apex and 1 at the lateral costophrenic angle. Findings are placed in
this frame so they follow the lung whatever the body's position and size.
"""

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image

SIDES = ("right", "left")

# Lobe (or lingula) centres and radii in the lung frame (u, v, radius_u, radius_v), as they
# project on a frontal radiograph: the middle lobe and lingula lie medially against the heart.
LOBES = {
    "RUL": ("right", 0.05, 0.22, 0.55, 0.18),
    "RML": ("right", -0.15, 0.66, 0.45, 0.13),
    "RLL": ("right", 0.35, 0.84, 0.5, 0.13),
    "LUL": ("left", 0.05, 0.22, 0.55, 0.18),
    "lingula": ("left", -0.1, 0.64, 0.45, 0.13),
    "LLL": ("left", 0.4, 0.86, 0.45, 0.12),
}
LOBE_NAMES = {
    "RUL": "right upper lobe",
    "RML": "right middle lobe",
    "RLL": "right lower lobe",
    "LUL": "left upper lobe",
    "lingula": "lingula",
    "LLL": "left lower lobe",
}


@dataclass(frozen=True)
class Anatomy:
    """One patient's normal chest, in normalised image coordinates."""

    midline_x: float
    apex_y: float  # top of both lungs
    lung_gap: float  # midline to each lung's centre
    lung_half_width: float
    diaphragm_right_y: float  # lateral costophrenic angle of the patient's right lung
    diaphragm_left_y: float
    body_half_width: float
    heart_ctr: float  # cardiothoracic ratio: heart width / thoracic width
    heart_height: float  # half-height of the cardiac silhouette
    rib_spacing: float
    rib_offset: float
    exposure: float  # overall gain
    gamma: float
    noise_sigma: float  # quantum noise, in 0..1 grey levels
    gastric_bubble: bool

    @property
    def thoracic_width(self):
        """Inner width of the thorax: lateral edge of one lung to the other's."""
        return 2.0 * (self.lung_gap + self.lung_half_width)

    def lung_box(self, side):
        """(centre_x, lateral_sign, top_y, bottom_y) of a lung; lateral_sign is +1 where x grows laterally."""
        if side not in SIDES:
            raise ValueError(f"side must be 'right' or 'left', got {side!r}")
        sign = -1.0 if side == "right" else 1.0
        bottom = self.diaphragm_right_y if side == "right" else self.diaphragm_left_y
        return self.midline_x + sign * self.lung_gap, sign, self.apex_y, bottom

    def lung_point(self, side, u, v):
        """Image (x, y) of the lung-frame point (u, v)."""
        centre, sign, top, bottom = self.lung_box(side)
        return centre + sign * u * self.lung_half_width * _width_factor(v), top + v * (bottom - top)

    def heart_box(self):
        """(centre_x, centre_y, half_width, half_height) of the cardiac silhouette."""
        half_width = 0.5 * self.heart_ctr * self.thoracic_width
        # Two thirds of the heart lie left of the midline: its centre shifts to the image's right.
        centre_x = self.midline_x + 0.3 * half_width
        base = 0.5 * (self.diaphragm_right_y + self.diaphragm_left_y)
        return centre_x, base - self.heart_height - 0.09, half_width, self.heart_height

    def hilum(self, side):
        return self.lung_point(side, -0.55, 0.45)


def sample_anatomy(rng):
    """Draw one patient's anatomy (position, size, exposure) from a numpy Generator."""
    scale = rng.uniform(0.9, 1.04)
    apex = 0.13 + rng.normal(0, 0.012)
    diaphragm_right = apex + 0.6 * scale + rng.normal(0, 0.015)
    return Anatomy(
        midline_x=0.5 + rng.normal(0, 0.012),
        apex_y=apex,
        lung_gap=0.175 * scale,
        lung_half_width=0.155 * scale * rng.uniform(0.95, 1.05),
        diaphragm_right_y=diaphragm_right,
        diaphragm_left_y=diaphragm_right + rng.uniform(0.01, 0.035),
        body_half_width=0.45 * scale * rng.uniform(0.97, 1.06),
        heart_ctr=rng.uniform(0.38, 0.47),
        heart_height=0.12 * scale * rng.uniform(0.92, 1.08),
        rib_spacing=0.058 * scale * rng.uniform(0.95, 1.05),
        rib_offset=rng.uniform(0.0, 0.02),
        exposure=rng.uniform(0.88, 1.1),
        gamma=rng.uniform(0.85, 1.2),
        noise_sigma=rng.uniform(0.01, 0.03),
        gastric_bubble=bool(rng.random() < 0.7),
    )


@lru_cache(maxsize=8)
def pixel_grid(size):
    """(x, y) arrays of pixel centres, each (size, size), read-only and shared."""
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size
    y, x = np.meshgrid(coords, coords, indexing="ij")
    x.flags.writeable = False
    y.flags.writeable = False
    return x, y


def smooth_noise(rng, size, cells):
    """Zero-mean smooth random field of shape (size, size), about unit amplitude, from a
    (cells x cells) grid of normal values resized bicubically."""
    grid = rng.standard_normal((cells, cells)).astype(np.float32)
    field = Image.fromarray(grid).resize((size, size), Image.BICUBIC)
    return np.asarray(field, dtype=np.float32)


def segment_distance(x, y, xa, ya, xb, yb):
    """Distance from points (x, y) to the segment from (xa, ya) to (xb, yb)."""
    dx, dy = xb - xa, yb - ya
    t = np.clip(((x - xa) * dx + (y - ya) * dy) / (dx * dx + dy * dy), 0.0, 1.0)
    return np.hypot(x - (xa + t * dx), y - (ya + t * dy))


def soft_inside(signed_distance, size, edge_px=1.0):
    """Anti-aliased mask (1 inside, 0 outside) from a signed distance (negative inside)."""
    return np.clip(0.5 - signed_distance * (size / (2.0 * edge_px)), 0.0, 1.0)


def _width_factor(v):
    # Lungs are narrow at the apex and widest at the bases.
    return 0.7 + 0.3 * np.clip(v * 1.8, 0.0, 1.0)


def lung_frame(anatomy, side, x, y):
    """Lung-frame coordinates (u, v) of image points."""
    centre, sign, top, bottom = anatomy.lung_box(side)
    v = (y - top) / (bottom - top)
    u = sign * (x - centre) / (anatomy.lung_half_width * _width_factor(v))
    return u, v


def lung_signed_distance(anatomy, side, x, y):
    """Approximate signed distance (normalised units, negative inside) to one lung's outline.

    The outline is a rounded superellipse (apex and chest wall) cut below by the
    hemidiaphragm's dome, which meets the lateral wall in a sharp costophrenic angle.
    """
    u, v = lung_frame(anatomy, side, x, y)
    _, _, top, bottom = anatomy.lung_box(side)
    height = bottom - top
    # Superellipse |u|^3 + |w|^3 = 1; (r^3 - 1) / 3 is the distance near the outline, in radii.
    au, aw = np.abs(u), np.abs((v - 0.55) / 0.62)
    shape = (au * au * au + aw * aw * aw - 1.0) / 3.0
    t = (np.clip(u, -1.0, 1.0) + 1.0) / 2.0
    dome = 0.8 + 0.2 * t * t * t
    return np.maximum(shape * anatomy.lung_half_width, (v - dome) * height)


def heart_signed_distance(anatomy, x, y):
    centre_x, centre_y, half_width, half_height = anatomy.heart_box()
    # Below its widest point the silhouette narrows slowly down into the diaphragm it sits on.
    dy = (y - centre_y) / np.where(y > centre_y, 3.0 * half_height, half_height)
    radius = np.sqrt(((x - centre_x) / half_width) ** 2 + dy**2)
    return (radius - 1.0) * min(half_width, half_height)


__all__ = [
    "Anatomy",
    "LOBES",
    "LOBE_NAMES",
    "SIDES",
    "heart_signed_distance",
    "lung_frame",
    "lung_signed_distance",
    "pixel_grid",
    "sample_anatomy",
    "segment_distance",
    "smooth_noise",
    "soft_inside",
]
