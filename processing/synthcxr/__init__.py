"""SynthCXR: a procedural chest radiograph data set whose findings, with side and location, are
known; with reports, CheXpert-style labels and question-answer pairs, written out in the
MIMIC-CXR-JPG, Open-I and VQA-RAD layouts.

    from processing.synthcxr import generate_synthcxr, write_synthcxr
    study = next(generate_synthcxr(1, size=256, seed=0))
    study.image, study.report, study.labels, study.findings, study.qa, study.view
    study.sex, study.age      # the patient: 'F'/'M', years (drawn independently of the findings)
    write_synthcxr("data/synthcxr", n=5000, size=512, seed=0)
"""

from .anatomy import Anatomy, sample_anatomy
from .findings import DEFAULT_MIX, FINDING_KINDS, Finding
from .generator import SynthStudy, generate_synthcxr, patient_metadata, synthesize_study
from .render import render_radiograph
from .writers import LAYOUTS, write_synthcxr

__all__ = [
    "DEFAULT_MIX",
    "FINDING_KINDS",
    "LAYOUTS",
    "Anatomy",
    "Finding",
    "SynthStudy",
    "generate_synthcxr",
    "patient_metadata",
    "render_radiograph",
    "sample_anatomy",
    "synthesize_study",
    "write_synthcxr",
]
