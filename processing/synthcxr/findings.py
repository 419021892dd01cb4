"""SynthCXR findings: what can be wrong in a study, how it is sampled, and how it is drawn.

A finding carries its true side (the patient's: "left", "right" or "bilateral") and location
(a lobe code such as "RLL", "apex", "base", or a device's position). Uncertain findings are
drawn subtly (a borderline heart, a blunted angle, a faint opacity) and reported with hedged
language, which is what CheXpert's -1 stands for.
"""

import zlib
from dataclasses import dataclass

import numpy as np

from .anatomy import LOBES, lung_frame, lung_signed_distance, segment_distance, smooth_noise, soft_inside

FINDING_KINDS = (
    "cardiomegaly",
    "pleural_effusion",
    "pneumothorax",
    "consolidation",
    "nodule",
    "atelectasis",
    "edema",
    "support_device",
)
DEVICES = ("ett", "ngt", "central_line", "pacemaker")

# Study-level mix: "normal" draws a study with no abnormality; other keys draw that kind as
# the study's first finding. Normal studies dominate, as in clinical practice.
DEFAULT_MIX = {
    "normal": 0.4,
    "cardiomegaly": 0.1,
    "pleural_effusion": 0.12,
    "pneumothorax": 0.08,
    "consolidation": 0.1,
    "nodule": 0.06,
    "atelectasis": 0.06,
    "edema": 0.03,
    "support_device": 0.05,
}


@dataclass(frozen=True)
class Finding:
    """One abnormality (or device) in a study, with its true side and location."""

    kind: str
    side: str | None = None  # the patient's side: "left", "right", "bilateral"; None if midline/global
    location: str | None = None  # lobe code, "apex", "base", or a device's position
    severity: str | None = None  # "small"/"moderate"/"large" or "mild"/"moderate"/"severe"
    size_mm: float | None = None  # nodule diameter
    ctr: float | None = None  # cardiothoracic ratio, cardiomegaly only
    device: str | None = None  # one of DEVICES, support_device only
    uncertain: bool = False

    def __post_init__(self):
        if self.kind not in FINDING_KINDS:
            raise ValueError(f"unknown finding kind {self.kind!r}; expected one of {FINDING_KINDS}")
        if self.side not in (None, "left", "right", "bilateral"):
            raise ValueError(f"finding side must be 'left', 'right', 'bilateral' or None, got {self.side!r}")

    @property
    def sides(self):
        """The lungs involved: ("left",), ("right",), ("right", "left") or ()."""
        if self.side == "bilateral":
            return ("right", "left")
        return (self.side,) if self.side else ()

    def as_dict(self):
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def _check_mix(mix):
    unknown = set(mix) - {"normal", *FINDING_KINDS}
    if unknown:
        raise ValueError(f"unknown kinds in the findings mix: {sorted(unknown)}; expected 'normal' or {FINDING_KINDS}")
    weights = np.array([float(w) for w in mix.values()])
    if (weights < 0).any() or weights.sum() <= 0:
        raise ValueError(f"findings mix weights must be non-negative with a positive sum, got {mix}")
    return list(mix), weights / weights.sum()


def sample_findings(rng, mix=None, max_findings=2, uncertain_rate=0.1):
    """Draw a study's findings: a kind from `mix`, then, while under `max_findings`, each
    further abnormal kind of the mix with probability 0.25."""
    kinds, probs = _check_mix(DEFAULT_MIX if mix is None else mix)
    first = kinds[rng.choice(len(kinds), p=probs)]
    if first == "normal":
        return []
    chosen = [first]
    extra = [k for k, p in zip(kinds, probs) if k not in ("normal", first) and p > 0]
    rng.shuffle(extra)
    for kind in extra:
        if len(chosen) >= max_findings:
            break
        if rng.random() < 0.25:
            chosen.append(kind)
    findings = []
    for kind in chosen:
        uncertain = kind != "support_device" and bool(rng.random() < uncertain_rate)
        findings.extend(_SAMPLERS[kind](rng, uncertain))
    return findings


def _pick(rng, options, probs=None):
    return options[rng.choice(len(options), p=probs)]


def _sample_cardiomegaly(rng, uncertain):
    if uncertain:
        return [Finding("cardiomegaly", severity="mild", ctr=float(rng.uniform(0.51, 0.53)), uncertain=True)]
    severity = _pick(rng, ("mild", "moderate", "severe"), [0.4, 0.4, 0.2])
    low, high = {"mild": (0.55, 0.58), "moderate": (0.58, 0.63), "severe": (0.63, 0.68)}[severity]
    return [Finding("cardiomegaly", severity=severity, ctr=float(rng.uniform(low, high)))]


def _sample_effusion(rng, uncertain):
    side = _pick(rng, ("left", "right", "bilateral"), [0.4, 0.4, 0.2])
    severity = "small" if uncertain else _pick(rng, ("small", "moderate", "large"), [0.45, 0.4, 0.15])
    return [Finding("pleural_effusion", side=side, location="base", severity=severity, uncertain=uncertain)]


def _sample_pneumothorax(rng, uncertain):
    side = _pick(rng, ("left", "right"))
    severity = "small" if uncertain else _pick(rng, ("small", "moderate", "large"), [0.4, 0.4, 0.2])
    return [Finding("pneumothorax", side=side, location="apex", severity=severity, uncertain=uncertain)]


def _sample_consolidation(rng, uncertain):
    lobe = _pick(rng, tuple(LOBES))
    return [Finding("consolidation", side=LOBES[lobe][0], location=lobe, uncertain=uncertain)]


def _sample_nodule(rng, uncertain):
    lobe = _pick(rng, ("RUL", "RLL", "LUL", "LLL", "RML", "lingula"))
    size = float(rng.integers(6, 10) if uncertain else rng.integers(9, 31))
    return [Finding("nodule", side=LOBES[lobe][0], location=lobe, size_mm=size, uncertain=uncertain)]


def _sample_atelectasis(rng, uncertain):
    side = _pick(rng, ("left", "right", "bilateral"), [0.35, 0.35, 0.3])
    return [Finding("atelectasis", side=side, location="base", severity="mild", uncertain=uncertain)]


def _sample_edema(rng, uncertain):
    severity = "mild" if uncertain else _pick(rng, ("mild", "moderate", "severe"), [0.4, 0.4, 0.2])
    return [Finding("edema", side="bilateral", severity=severity, uncertain=uncertain)]


_DEVICE_LOCATIONS = {
    "ett": ("mid trachea",),
    "ngt": ("stomach",),
    "central_line": ("right internal jugular", "left subclavian"),
    "pacemaker": ("left chest wall",),
}


def _sample_devices(rng, uncertain):
    count = 1 + int(rng.random() < 0.35)
    devices = sorted(rng.choice(len(DEVICES), size=count, replace=False))
    findings = []
    for index in devices:
        device = DEVICES[index]
        location = _pick(rng, _DEVICE_LOCATIONS[device])
        side = {"right internal jugular": "right", "left subclavian": "left", "left chest wall": "left"}.get(location)
        findings.append(Finding("support_device", side=side, location=location, device=device))
    return findings


_SAMPLERS = {
    "cardiomegaly": _sample_cardiomegaly,
    "pleural_effusion": _sample_effusion,
    "pneumothorax": _sample_pneumothorax,
    "consolidation": _sample_consolidation,
    "nodule": _sample_nodule,
    "atelectasis": _sample_atelectasis,
    "edema": _sample_edema,
    "support_device": _sample_devices,
}


def finding_rng(noise_seed, finding):
    """A shape generator that depends only on the study's seed and the finding itself, so a
    study drawn with and without another finding has identical textures."""
    return np.random.default_rng([noise_seed, zlib.crc32(repr(finding).encode())])


# ---- drawing ------------------------------------------------------------------------------
# Each painter edits the canvas maps (see render.Canvas): `air` is the fraction of lung air
# left at a pixel, `marked` the part of it that still shows vessel markings, `density` an
# additive attenuation, and `lines` polylines for radiopaque devices.


def paint_effusion(canvas, finding):
    """Dependent fluid in the lung base, with a meniscus rising towards the lateral wall."""
    level = {"small": 0.83, "moderate": 0.68, "large": 0.5}[finding.severity]
    for side in finding.sides:
        u, v = lung_frame(canvas.anatomy, side, canvas.x, canvas.y)
        meniscus = level - 0.12 * np.clip(u, 0.0, 1.0) ** 2
        fluid = np.clip((v - meniscus) / 0.06 + 0.5, 0.0, 1.0) * canvas.lung[side]
        canvas.remove_air(fluid * (0.6 if finding.uncertain else 1.0))


def paint_pneumothorax(canvas, finding):
    """Lung collapsed towards the lower hilum: beyond its visceral pleural line, air without markings."""
    shrink = {"small": 0.85, "moderate": 0.72, "large": 0.55}[finding.severity]
    if finding.uncertain:
        shrink = 0.9
    anatomy = canvas.anatomy
    for side in finding.sides:
        cx, cy = anatomy.lung_point(side, -0.3, 1.05)  # upright: the lung falls away from apex and lateral wall
        collapsed = lung_signed_distance(anatomy, side, cx + (canvas.x - cx) / shrink, cy + (canvas.y - cy) / shrink)
        inside = soft_inside(collapsed * shrink, canvas.size, edge_px=1.2)
        lung = canvas.lung[side]
        gap = lung * (1.0 - inside)
        canvas.marked *= 1.0 - gap
        canvas.density -= 0.07 * gap
        pleural_line = 4.0 * inside * (1.0 - inside) * lung
        canvas.density += 0.16 * pleural_line


def _lobe_blob(canvas, lobe, rng, scale=1.0):
    side, u0, v0, ru, rv = LOBES[lobe]
    u, v = lung_frame(canvas.anatomy, side, canvas.x, canvas.y)
    radius = np.sqrt(((u - u0) / (ru * scale)) ** 2 + ((v - v0) / (rv * scale)) ** 2)
    ragged = smooth_noise(rng, canvas.size, 12) * 0.35
    return np.clip((1.0 - radius + ragged) * 3.0, 0.0, 1.0) * canvas.lung[side]


def paint_consolidation(canvas, finding):
    blob = _lobe_blob(canvas, finding.location, finding_rng(canvas.noise_seed, finding))
    canvas.remove_air(blob * (0.45 if finding.uncertain else 0.85))


def paint_nodule(canvas, finding):
    rng = finding_rng(canvas.noise_seed, finding)
    side, u0, v0, ru, rv = LOBES[finding.location]
    u0, v0 = u0 + rng.uniform(-0.4, 0.4) * ru, v0 + rng.uniform(-0.4, 0.4) * rv
    x0, y0 = canvas.anatomy.lung_point(side, u0, v0)
    # Millimetres to image units: an adult thorax is about 300 mm across. Never below 1.5 px.
    radius = max(0.5 * finding.size_mm / 300.0 * canvas.anatomy.thoracic_width, 1.5 / canvas.size)
    disk = soft_inside(np.hypot(canvas.x - x0, canvas.y - y0) - radius, canvas.size)
    canvas.remove_air(disk * (0.6 if finding.uncertain else 0.95))
    canvas.density += 0.06 * disk


def paint_atelectasis(canvas, finding):
    """Plate-like (discoid) atelectasis: a short, nearly horizontal band above the dome."""
    rng = finding_rng(canvas.noise_seed, finding)
    thickness = max(0.007, 1.2 / canvas.size)
    for side in finding.sides:
        v0 = rng.uniform(0.7, 0.8)
        (xa, ya), (xb, yb) = canvas.anatomy.lung_point(side, -0.3, v0), canvas.anatomy.lung_point(
            side, 0.55, v0 + rng.uniform(-0.05, 0.02)
        )
        band = soft_inside(segment_distance(canvas.x, canvas.y, xa, ya, xb, yb) - thickness, canvas.size)
        canvas.remove_air(band * canvas.lung[side] * (0.5 if finding.uncertain else 0.85))


def paint_edema(canvas, finding):
    """Bilateral perihilar haze fading to the periphery, over a fine interstitial texture."""
    strength = {"mild": 0.3, "moderate": 0.45, "severe": 0.6}[finding.severity] * (0.7 if finding.uncertain else 1.0)
    texture = 1.0 + 0.3 * smooth_noise(finding_rng(canvas.noise_seed, finding), canvas.size, 40)
    for side in ("right", "left"):
        hx, hy = canvas.anatomy.hilum(side)
        haze = np.exp(-((canvas.x - hx) ** 2 + (canvas.y - hy) ** 2) / (2 * 0.11**2))
        canvas.remove_air(np.clip(strength * haze * texture, 0.0, 0.9) * canvas.lung[side])


def paint_device(canvas, finding):
    a = canvas.anatomy
    mid, apex = a.midline_x, a.apex_y
    carina = apex + 0.2
    heart_x, heart_y, heart_w, heart_h = a.heart_box()
    if finding.device == "ett":
        canvas.lines.append(([(mid, 0.0), (mid + 0.002, carina - 0.05)], 0.012))
    elif finding.device == "ngt":
        dome = a.diaphragm_left_y
        path = [
            (mid + 0.004, 0.0),
            (mid + 0.012, carina),
            (mid + 0.03, dome - 0.1),
            (mid + 0.08, dome + 0.02),
            (mid + 0.16, dome + 0.07),
        ]
        canvas.lines.append((path, 0.006))
    elif finding.device == "central_line":
        if finding.location == "right internal jugular":
            path = [
                (mid - 0.11, 0.0),
                (mid - 0.065, apex + 0.05),
                (mid - 0.04, apex + 0.13),
                (mid - 0.035, carina + 0.04),
            ]
        else:
            path = [
                (mid + 0.33, apex + 0.01),
                (mid + 0.15, apex + 0.04),
                (mid + 0.02, apex + 0.09),
                (mid - 0.035, carina + 0.04),
            ]
        canvas.lines.append((path, 0.005))
    elif finding.device == "pacemaker":
        gx, gy = mid + 0.25, apex + 0.06
        canvas.boxes.append(((gx - 0.045, gy - 0.03, gx + 0.045, gy + 0.03), 0.9))
        lead = [
            (gx - 0.03, gy),
            (mid + 0.07, apex + 0.1),
            (mid - 0.03, carina + 0.06),
            (heart_x - 0.3 * heart_w, heart_y - 0.2 * heart_h),
            (heart_x + 0.4 * heart_w, heart_y + 0.55 * heart_h),
        ]
        canvas.lines.append((lead, 0.005))
    else:
        raise ValueError(f"unknown support device {finding.device!r}; expected one of {DEVICES}")


PAINTERS = {
    "pleural_effusion": paint_effusion,
    "pneumothorax": paint_pneumothorax,
    "consolidation": paint_consolidation,
    "nodule": paint_nodule,
    "atelectasis": paint_atelectasis,
    "edema": paint_edema,
    "support_device": paint_device,
}

__all__ = ["DEFAULT_MIX", "DEVICES", "FINDING_KINDS", "Finding", "PAINTERS", "sample_findings"]
