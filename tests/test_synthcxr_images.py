"""SynthCXR images show what the labels say, on the side they say (radiological convention:
the patient's left is on the image's right), measured on pixel statistics in known regions."""

import dataclasses

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from processing.synthcxr import Finding, generate_synthcxr, render_radiograph, sample_anatomy
from processing.synthcxr.anatomy import lung_frame

SIZE = 128


def _anatomy(k, clean=False):
    anatomy = sample_anatomy(np.random.default_rng([123, k]))
    return dataclasses.replace(anatomy, noise_sigma=0.0) if clean else anatomy


def _pixels(image):
    return np.asarray(image, dtype=np.float32)


def _difference(finding, k, size=SIZE):
    """The image with `finding` minus the same study without it (same anatomy, same noise)."""
    anatomy = _anatomy(k)
    return _pixels(render_radiograph(anatomy, [finding], size, k)) - _pixels(render_radiograph(anatomy, [], size, k))


def _halves(values, anatomy):
    """(image-left half, image-right half) = (patient's right, patient's left), split at the body's midline."""
    middle = int(round(anatomy.midline_x * values.shape[1]))
    return values[:, :middle], values[:, middle:]


@pytest.mark.parametrize("side", ["left", "right"])
def test_effusion_brightens_the_lower_zone_of_its_side_only(side):
    for k in range(4):
        diff = _difference(Finding("pleural_effusion", side=side, location="base", severity="moderate"), k)
        patient_right, patient_left = _halves(diff, _anatomy(k))
        own, other = (patient_left, patient_right) if side == "left" else (patient_right, patient_left)
        assert own.sum() > 2000, "the effusion should add density"
        assert np.abs(other).sum() < 0.02 * own.sum()
        rows = np.nonzero(own.sum(axis=1) > 0)[0]
        assert rows.mean() > 0.5 * SIZE, "fluid collects in the lower chest"


def test_effusion_side_is_readable_from_generated_images():
    """Across generated studies, the lower-zone asymmetry tells a left effusion from a right one."""
    correct, total = 0, 0
    mix = {"pleural_effusion": 1.0}
    for study in generate_synthcxr(40, size=64, seed=5, mix=mix, max_findings=1, uncertain_rate=0.0):
        (finding,) = study.findings
        if finding.side == "bilateral":
            continue
        pixels = _pixels(study.image)
        lower = pixels[int(0.58 * 64) : int(0.75 * 64)]
        image_left, image_right = lower[:, 8:24].mean(), lower[:, 40:56].mean()
        predicted = "left" if image_right > image_left else "right"
        correct += predicted == finding.side
        total += 1
    assert total >= 20
    assert correct / total >= 0.9


@pytest.mark.parametrize("side", ["left", "right"])
def test_pneumothorax_darkens_its_side_and_erases_lung_markings(side):
    anatomy = _anatomy(3, clean=True)
    finding = Finding("pneumothorax", side=side, location="apex", severity="large")
    with_ptx = _pixels(render_radiograph(anatomy, [finding], 256, 7))
    without = _pixels(render_radiograph(anatomy, [], 256, 7))
    diff = with_ptx - without
    patient_right, patient_left = _halves(diff, anatomy)
    own, other = (patient_left, patient_right) if side == "left" else (patient_right, patient_left)
    assert own.min() < -10 and np.abs(other).max() <= 1.0
    gap = diff < -5  # the pleural space the collapsed lung left
    assert gap.sum() > 200
    rows, _ = np.nonzero(gap)
    assert rows.mean() < 0.55 * 256, "air rises to the apex"
    # Beyond the visceral pleural line there are no vessel markings: redrawing the study with
    # other vessel textures changes the normal lung there, but not the pneumothorax.
    other_ptx = _pixels(render_radiograph(anatomy, [finding], 256, 8))
    other_without = _pixels(render_radiograph(anatomy, [], 256, 8))
    vessels_changed = _fine_detail(other_without - without)[gap]
    assert vessels_changed.mean() > 1.0
    assert _fine_detail(other_ptx - with_ptx)[gap].mean() < 0.2 * vessels_changed.mean()


def _fine_detail(difference):
    """|high-pass| of a difference image: thin vessels, not the smooth soft-tissue texture."""
    return np.abs(difference - gaussian_filter(difference, 4.0))


def _measured_ctr(image, anatomy, heart_y):
    """Cardiothoracic ratio measured on one image row band: bright heart over dark lungs."""
    pixels = _pixels(image)
    size = pixels.shape[0]
    row = int(heart_y * size)
    profile = pixels[row - 2 : row + 3].mean(axis=0)
    inner = profile[int(0.1 * size) : int(0.9 * size)]
    threshold = 0.5 * (np.percentile(inner, 10) + np.percentile(inner, 90))
    dark = np.nonzero(inner < threshold)[0]
    thorax = dark.max() - dark.min() + 1
    middle = int((anatomy.midline_x - 0.1) * size)
    bright = inner[dark.min() : dark.max() + 1] >= threshold
    heart = bright.sum()
    assert middle > 0
    return heart / thorax


def test_cardiomegaly_makes_the_heart_wider_than_half_the_thorax():
    mix = {"normal": 1.0, "cardiomegaly": 1.0}
    seen = {True: 0, False: 0}
    for study in generate_synthcxr(24, size=SIZE, seed=2, mix=mix, max_findings=1, uncertain_rate=0.0):
        enlarged = any(f.kind == "cardiomegaly" for f in study.findings)
        ctr = next((f.ctr for f in study.findings if f.kind == "cardiomegaly"), study.anatomy.heart_ctr)
        anatomy = dataclasses.replace(study.anatomy, heart_ctr=ctr)
        measured = _measured_ctr(study.image, anatomy, anatomy.heart_box()[1])
        assert (measured > 0.5) == enlarged, f"study {study.index}: measured CTR {measured:.2f}, true {ctr:.2f}"
        assert abs(measured - ctr) < 0.08
        seen[enlarged] += 1
    assert min(seen.values()) >= 5


@pytest.mark.parametrize(
    "lobe,side,upper",
    [
        ("RUL", "right", True),
        ("RLL", "right", False),
        ("LUL", "left", True),
        ("LLL", "left", False),
        ("lingula", "left", False),
        ("RML", "right", False),
    ],
)
def test_consolidation_lies_in_its_lobe(lobe, side, upper):
    diff = _difference(Finding("consolidation", side=side, location=lobe), 1)
    weight = np.clip(diff, 0, None)
    assert weight.sum() > 1000
    rows, cols = np.indices(weight.shape)
    centre_x = (weight * cols).sum() / weight.sum() / SIZE
    centre_y = (weight * rows).sum() / weight.sum() / SIZE
    anatomy = _anatomy(1)
    assert (centre_x > anatomy.midline_x) == (side == "left")
    _, v = lung_frame(anatomy, side, centre_x, centre_y)
    assert v < 0.4 if upper else v > 0.5


@pytest.mark.parametrize("lobe,side", [("RUL", "right"), ("LLL", "left")])
def test_nodule_side_and_size(lobe, side):
    areas = []
    for size_mm in (10, 25):
        diff = _difference(Finding("nodule", side=side, location=lobe, size_mm=size_mm), 2, size=256)
        patient_right, patient_left = _halves(diff > 20, _anatomy(2))
        own, other = (patient_left, patient_right) if side == "left" else (patient_right, patient_left)
        assert own.sum() > 0 and other.sum() == 0
        areas.append(own.sum())
    assert areas[1] > 3 * areas[0], "a 25 mm nodule covers (25/10)^2 times the area of a 10 mm one"


def test_basilar_atelectasis_on_each_side_it_names():
    for side, expected in (("left", (False, True)), ("right", (True, False)), ("bilateral", (True, True))):
        diff = _difference(Finding("atelectasis", side=side, location="base", severity="mild"), 4)
        halves = _halves(diff > 15, _anatomy(4))
        assert tuple(h.sum() > 0 for h in halves) == expected, side
        rows, _ = np.nonzero(diff > 15)
        assert rows.min() > 0.45 * SIZE


def test_devices_where_they_belong():
    anatomy = _anatomy(0)
    ett = _difference(Finding("support_device", location="mid trachea", device="ett"), 0)
    rows, cols = np.nonzero(ett > 20)
    assert abs(cols.mean() / SIZE - anatomy.midline_x) < 0.03 and rows.max() / SIZE < anatomy.apex_y + 0.2
    pacemaker = _difference(Finding("support_device", side="left", location="left chest wall", device="pacemaker"), 0)
    rows, cols = np.nonzero(pacemaker > 40)
    assert np.median(cols) / SIZE > anatomy.midline_x + 0.1, "a left chest wall generator is on the image's right"


def test_small_images_still_show_findings():
    """At 64 px a moderate effusion and a large pneumothorax still change their side's pixels."""
    for finding in (
        Finding("pleural_effusion", side="right", location="base", severity="moderate"),
        Finding("pneumothorax", side="right", location="apex", severity="large"),
    ):
        diff = _difference(finding, 5, size=64)
        patient_right, patient_left = _halves(np.abs(diff), _anatomy(5))
        assert patient_right.sum() > 200 and patient_left.sum() < 0.05 * patient_right.sum()
