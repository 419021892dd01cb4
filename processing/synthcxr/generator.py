"""`generate_synthcxr`: SynthCXR studies, each derived from (seed, index) alone.

Study i is the same whatever n is, whichever other studies are generated, and in whatever
process: so generation runs in parallel and any slice can be regenerated on its own.

Each part of a study draws from its own random stream of (seed, index): anatomy 0, findings and view 1, image
noise 2, text 3, split 4, patient (sex and age) 5. The patient's sex and age are drawn independently of the
findings and never drawn on the image: on SynthCXR a subgroup gap in a model's metrics is chance (or a
difference in the groups' label mix), which makes it a null check for the bias evaluation.
"""

import functools
import hashlib
import multiprocessing
import random
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from .anatomy import Anatomy, sample_anatomy
from .findings import Finding, sample_findings
from .questions import make_questions
from .reports import INDICATIONS, write_report
from .render import render_radiograph

SPLIT_NAMES = ("train", "validate", "test")
SPLIT_FRACTIONS = (("train", 0.9), ("validate", 0.05), ("test", 0.05))
# Patients: about half women; age at the study roughly as in MIMIC-CXR (median in the sixties), 18 to 91 (MIMIC-IV
# records every older patient as 91).
FEMALE_SHARE = 0.48
AGE_MEAN, AGE_SD, AGE_RANGE = 62.0, 17.0, (18, 91)


@dataclass
class SynthStudy:
    """One SynthCXR study: a frontal radiograph with its report, labels and questions."""

    index: int
    image: Image.Image  # mode 'L', size x size
    report: str  # "FINDINGS: ...\nIMPRESSION: ...", as the readers compose findings+impression
    findings_text: str
    impression_text: str
    labels: dict  # CheXpert label -> 1, 0, -1 or None (not mentioned)
    findings: list[Finding]  # true findings with side and location; [] for a normal study
    qa: list[dict]  # {question, answer, answer_type CLOSED/OPEN, question_type}
    view: str  # "PA" or "AP"
    indication: str
    split: str  # "train", "validate" or "test"
    subject_id: int
    study_id: int
    dicom_id: str
    sex: str  # "F" or "M", as MIMIC-IV's patients table writes gender
    age: int  # years at the study
    anatomy: Anatomy = field(repr=False)
    noise_seed: int = field(repr=False)

    @property
    def is_normal(self):
        return not any(f.kind != "support_device" for f in self.findings)


def _study_rng(seed, index, stream):
    return np.random.default_rng([seed, index, stream])


def patient_metadata(seed, index) -> tuple[str, int]:
    """(sex "F"/"M", age in years) of study `index`'s patient: cheap (no image), the same as the study's own."""
    rng = _study_rng(seed, index, 5)
    sex = "F" if rng.random() < FEMALE_SHARE else "M"
    age = int(np.clip(round(rng.normal(AGE_MEAN, AGE_SD)), *AGE_RANGE))
    return sex, age


def synthesize_study(
    index, size=512, seed=0, mix=None, max_findings=2, uncertain_rate=0.1, ap_rate=0.1, max_questions=6,
    split_fractions=SPLIT_FRACTIONS,
):
    """Study `index` of the SynthCXR set drawn with `seed` (see `generate_synthcxr`)."""
    anatomy = sample_anatomy(_study_rng(seed, index, 0))
    finding_rng = _study_rng(seed, index, 1)
    findings = sample_findings(finding_rng, mix=mix, max_findings=max_findings, uncertain_rate=uncertain_rate)
    # Intubated patients are imaged supine and portable: AP.
    intubated = any(f.device == "ett" for f in findings)
    view = "AP" if finding_rng.random() < (0.8 if intubated else ap_rate) else "PA"
    noise_seed = int(_study_rng(seed, index, 2).integers(2**62))
    text_rng = random.Random(int(_study_rng(seed, index, 3).integers(2**62)))
    findings_text, impression_text, labels = write_report(findings, view, text_rng)
    draw = _study_rng(seed, index, 4).random()
    split = next((name for name, upper in _cumulative(split_fractions) if draw < upper), "test")
    digest = hashlib.sha1(f"synthcxr:{seed}:{index}".encode()).hexdigest()
    sex, age = patient_metadata(seed, index)
    return SynthStudy(
        index=index,
        image=render_radiograph(anatomy, findings, size, noise_seed),
        report=f"FINDINGS: {findings_text}\nIMPRESSION: {impression_text}",
        findings_text=findings_text,
        impression_text=impression_text,
        labels=labels,
        findings=findings,
        qa=make_questions(findings, view, text_rng, max_questions=max_questions),
        view=view,
        indication=text_rng.choice(INDICATIONS),
        split=split,
        subject_id=10_000_000 + index,
        study_id=50_000_000 + index,
        dicom_id="-".join(digest[i : i + 8] for i in range(0, 40, 8)),
        sex=sex,
        age=age,
        anatomy=anatomy,
        noise_seed=noise_seed,
    )


def check_split_fractions(fractions) -> tuple:
    """((split, share), ...) for train, validate and test, each share >= 0, summing to 1: as given, or a ValueError."""
    fractions = tuple((name, float(share)) for name, share in fractions)
    names = [name for name, _ in fractions]
    if sorted(names) != sorted(SPLIT_NAMES):
        raise ValueError(f"split fractions name {names}: give each of {list(SPLIT_NAMES)} once")
    if any(share < 0 for _, share in fractions) or abs(sum(share for _, share in fractions) - 1) > 1e-6:
        raise ValueError(f"split fractions {dict(fractions)}: each share >= 0, summing to 1")
    return fractions


def _cumulative(fractions):
    total = 0.0
    for name, fraction in fractions:
        total += fraction
        yield name, total


def generate_synthcxr(n, size=512, seed=0, *, start=0, num_workers=0, **options):
    """Iterate over `n` SynthCXR studies (indices start .. start+n-1), deterministic in `seed`.

    options: `mix` (dict of "normal" and finding kinds to weights, see findings.DEFAULT_MIX),
    `max_findings` (per study, default 2), `uncertain_rate` (fraction of findings reported with
    hedging, CheXpert -1; default 0.1), `ap_rate` (AP views among non-intubated patients),
    `max_questions` (question-answer pairs per study), `split_fractions` (((split, share), ...) for train, validate
    and test; default 0.9 / 0.05 / 0.05; a study's split draw is the same whatever the shares). `num_workers` > 0
    renders in that many processes; the studies and their order are the same.
    """
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not isinstance(size, int) or size < 16:
        raise ValueError(f"size must be an integer of at least 16 pixels, got {size!r}")
    if "split_fractions" in options:
        options["split_fractions"] = check_split_fractions(options["split_fractions"])
    make = functools.partial(synthesize_study, size=size, seed=seed, **options)
    indices = range(start, start + n)
    if num_workers and n > 1:
        with multiprocessing.get_context("spawn").Pool(num_workers) as pool:
            yield from pool.imap(make, indices, chunksize=max(1, min(32, n // (4 * num_workers))))
    else:
        for index in indices:
            yield make(index)


__all__ = [
    "SPLIT_FRACTIONS", "SPLIT_NAMES", "SynthStudy", "check_split_fractions", "generate_synthcxr", "patient_metadata",
    "synthesize_study",
]
