"""Rendering a SynthCXR radiograph from an anatomy and its findings.

Brightness follows attenuation along the beam, so structures add: soft tissue is the base,
lung air subtracts, heart, fluid, bone and devices add. Findings act on a few shared maps
(lung air left, the part still showing vessel markings, extra density, device lines) so each
painter stays small; see findings.py.
"""

import dataclasses
import math
import random

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .anatomy import (
    heart_signed_distance,
    lung_signed_distance,
    pixel_grid,
    segment_distance,
    smooth_noise,
    soft_inside,
)
from .findings import PAINTERS

DETAIL_SIZE = 320


class Canvas:
    """The maps findings paint on, for one image."""

    def __init__(self, anatomy, size, noise_seed):
        self.anatomy, self.size, self.noise_seed = anatomy, size, noise_seed
        self.x, self.y = pixel_grid(size)
        # Organ outlines are a little soft on radiographs: edges a few pixels wide at 512 px.
        edge = max(1.0, size / 200.0)
        self.lung = {
            side: soft_inside(lung_signed_distance(anatomy, side, self.x, self.y), size, edge)
            for side in ("right", "left")
        }
        self.heart = soft_inside(heart_signed_distance(anatomy, self.x, self.y), size, 1.5 * edge)
        self.air = (self.lung["right"] + self.lung["left"]) * (1.0 - self.heart)
        self.marked = self.air.copy()
        self.density = np.zeros_like(self.air)
        self.lines = []  # (points in image units, width in image units)
        self.boxes = []  # ((x0, y0, x1, y1), strength)

    def remove_air(self, amount):
        """Replace a fraction of the lung air by soft-tissue density (fluid, consolidation, ...)."""
        keep = 1.0 - amount
        self.air *= keep
        self.marked *= keep


def render_radiograph(anatomy, findings, size, noise_seed):
    """The PIL 'L' image of `anatomy` with `findings`, `size` x `size` pixels.

    `noise_seed` fixes every texture (vessels, noise, finding shapes), so the same study can be
    drawn with and without a finding and differ only where that finding is.
    """
    if not isinstance(size, int) or size < 16:
        raise ValueError(f"image size must be an integer of at least 16 pixels, got {size!r}")
    for finding in findings:
        if finding.kind == "cardiomegaly":
            anatomy = dataclasses.replace(anatomy, heart_ctr=finding.ctr)
    # Anatomy and findings are drawn at up to DETAIL_SIZE pixels, then resized: radiographs
    # are smooth at that scale, and this keeps 512 px several times faster. Noise is full size.
    full_size, size = size, min(size, DETAIL_SIZE)
    canvas = Canvas(anatomy, size, noise_seed)
    for finding in findings:
        if finding.kind != "cardiomegaly":
            PAINTERS[finding.kind](canvas, finding)

    a, x, y = anatomy, canvas.x, canvas.y
    texture_rng = np.random.default_rng([noise_seed, 0])
    bx, by = ((x - a.midline_x) / a.body_half_width) ** 2, ((y - 0.64) / 0.7) ** 2
    body = soft_inside((bx * bx + by * by - 1.0) * (0.25 * a.body_half_width), size, edge_px=2.0)
    diaphragm = 0.5 * (a.diaphragm_right_y + a.diaphragm_left_y)
    # The heart is a little denser than soft tissue above the diaphragm; below it they merge.
    heart = canvas.heart * soft_inside(y - (diaphragm - 0.08), size, edge_px=0.04 * size)
    attenuation = 0.56 * body + canvas.density + 0.05 * heart
    attenuation += 0.12 * _mediastinum(a, x, y, size) - 0.1 * _trachea(a, x, y, size)
    # Overlying soft tissue (breasts, pectorals) thickens towards the lung bases.
    depth = np.clip((y - a.apex_y) / (diaphragm - a.apex_y), 0.0, 1.0)
    attenuation -= 0.42 * canvas.air * (1.0 - 0.2 * depth * depth)
    attenuation += 0.025 * body * smooth_noise(texture_rng, size, 6)
    markings = _vessel_layer(a, size, texture_rng) + 0.025 * smooth_noise(texture_rng, size, 48)
    attenuation += markings * canvas.marked
    attenuation += body * (0.035 * _spine(a, x, size) + _ribs(a, x, y, size) + 0.13 * _clavicles(a, x, y, size))
    if a.gastric_bubble:
        bubble = np.hypot((x - (a.midline_x + 0.13)) / 0.045, (y - (a.diaphragm_left_y + 0.045)) / 0.025)
        attenuation -= 0.22 * soft_inside((bubble - 1.0) * 0.025, size)
    attenuation += _devices(canvas)

    # Exposure, then the detector's gamma through a lookup table (a power per pixel is slow).
    levels = (np.clip(attenuation * a.exposure, 0.0, 1.0) * 1023.0 + 0.5).astype(np.int16)
    gamma_table = (np.linspace(0.0, 1.0, 1024) ** a.gamma * 255.0 + 0.5).astype(np.uint8)
    blurred = Image.fromarray(gamma_table[levels]).filter(ImageFilter.GaussianBlur(0.35 + size / 700.0))
    if full_size != size:
        blurred = blurred.resize((full_size, full_size), Image.BICUBIC)
    noise = np.random.default_rng([noise_seed, 1]).standard_normal((full_size, full_size), dtype=np.float32)
    pixels = np.asarray(blurred, dtype=np.float32) + noise * (a.noise_sigma * 255.0)
    return Image.fromarray(np.clip(pixels + 0.5, 0, 255).astype(np.uint8))


def _mediastinum(a, x, y, size):
    heart_x, heart_y, _, _ = a.heart_box()
    band = soft_inside(np.abs(x - a.midline_x) - 0.048, size) * soft_inside(y - heart_y, size)
    knob = soft_inside(np.hypot(x - (a.midline_x + 0.055), y - (a.apex_y + 0.15)) - 0.032, size)
    return np.maximum(band, knob)


def _trachea(a, x, y, size):
    return soft_inside(np.abs(x - a.midline_x) - 0.013, size) * soft_inside(y - (a.apex_y + 0.2), size)


def _spine(a, x, size):
    return soft_inside(np.abs(x - a.midline_x) - 0.035, size)


def _ribs(a, x, y, size):
    """Posterior ribs arch down laterally; fainter anterior ribs run down towards the midline."""
    lateral = np.abs(x - a.midline_x)
    in_chest = soft_inside(lateral - (0.5 * a.thoracic_width + 0.015), size) * soft_inside(
        y - (a.diaphragm_left_y + 0.06), size
    )
    in_chest *= soft_inside(0.04 - lateral, size)  # ribs start at the spine's transverse processes
    posterior = _bands(
        y - a.apex_y + 0.05 - a.rib_offset - 0.1 * lateral + 1.3 * lateral**2, a.rib_spacing, 0.38, 10, size
    )
    anterior = _bands(y - a.apex_y - 0.02 + 0.3 * (lateral - 0.3), a.rib_spacing * 1.1, 0.3, 6, size)
    return in_chest * (0.06 * posterior + 0.035 * anterior * soft_inside(0.06 - lateral, size))


def _bands(offset, spacing, duty, count, size):
    phase = offset / spacing
    frac = phase - np.floor(phase)
    half = duty / 2.0
    band = np.clip((half - np.abs(frac - half)) * spacing * size, 0.0, 1.0)
    return band * ((phase >= 0) & (phase < count))


def _clavicles(a, x, y, size):
    total = np.zeros_like(x)
    for sign in (-1.0, 1.0):
        xa, ya = a.midline_x + sign * 0.035, a.apex_y + 0.045
        xb, yb = a.midline_x + sign * 0.27, a.apex_y - 0.035
        total += soft_inside(segment_distance(x, y, xa, ya, xb, yb) - 0.013, size)
    return total


def _vessel_layer(a, size, rng):
    """Pulmonary vessels branching from each hilum, tapering towards the periphery."""
    layer = Image.new("F", (size, size), 0.0)
    draw = ImageDraw.Draw(layer)
    # Side branches thinner than a pixel are not drawn: small images skip them (the main
    # vessels, each with its own generator, stay the same at every size).
    max_depth = 0 if size < 96 else 1 if size < 192 else 2
    seeds = rng.integers(2**62, size=16)
    for number, (side, lateral, angle) in enumerate(
        (side, lateral, angle)
        for side, lateral in (("right", -1.0), ("left", 1.0))
        for angle in np.linspace(-1.9, 1.3, 8)
    ):
        branch_rng = random.Random(int(seeds[number]))  # fast scalar draws for the many small steps
        hx, hy = a.hilum(side)
        angle += branch_rng.gauss(0, 0.12)
        _branch(draw, branch_rng, size, hx, hy, angle, lateral, 0.085, 0.009, max_depth)
    return np.asarray(layer, dtype=np.float32)


def _branch(draw, rng, size, x, y, angle, lateral, strength, width, depth_left):
    """One vessel: a wandering polyline (angle 0 points laterally, negative upwards), with side branches."""
    points = [(x * size, y * size)]
    for _ in range(5):
        angle += rng.gauss(0, 0.22)
        step = 0.035 * rng.uniform(0.7, 1.2)
        x, y = x + lateral * step * math.cos(angle), y + step * math.sin(angle)
        points.append((x * size, y * size))
        if depth_left and rng.random() < 0.3:
            turn = rng.choice((-0.6, 0.6))
            _branch(draw, rng, size, x, y, angle + turn, lateral, strength * 0.6, width * 0.6, depth_left - 1)
    draw.line(points, fill=float(strength), width=max(1, round(width * size)), joint="curve")


def _devices(canvas):
    if not canvas.lines and not canvas.boxes:
        return 0.0
    size = canvas.size
    layer = Image.new("F", (size, size), 0.0)
    draw = ImageDraw.Draw(layer)
    for points, width in canvas.lines:
        draw.line(
            [(px * size, py * size) for px, py in points], fill=0.45, width=max(1, round(width * size)), joint="curve"
        )
    for (x0, y0, x1, y1), strength in canvas.boxes:
        draw.rounded_rectangle((x0 * size, y0 * size, x1 * size, y1 * size), radius=0.01 * size, fill=strength)
    return np.asarray(layer, dtype=np.float32)


__all__ = ["Canvas", "render_radiograph"]
