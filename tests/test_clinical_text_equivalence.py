"""The fast clinical normaliser against a plain reference built from the same tables.

The normaliser scans only where a match can be (header lines, anchor words, digit shapes) and
writes its keyword alternations as tries. The reference here is the straightforward form: each
regex over the whole text, one rule after another, flat longest-first alternations. Both run on
SynthCXR reports with identifiers and abbreviations mixed in, and on random strings built to
hit boundaries: table keys in every case, glued to each other or to punctuation, digits and
non-ASCII characters. Outputs must be identical, step by step and as a whole.
"""

import random
import re

import numpy as np
import pytest

from processing import clinical_deid_medvl, clinical_text_medvl
from processing.clinical_abbreviations_medvl import ABBREVIATIONS, CONTEXTUAL, LATERALITY_CONTEXT, SHORTHAND
from processing.clinical_terms_medvl import (
    LATERALITY_ABBREVIATIONS,
    LATERALITY_FIXED,
    LATERALITY_WORDS,
    LINGULA_TO_MIDDLE_LOBE,
    MIDDLE_LOBE_TO_LINGULA,
    SPELLING_RULES,
    SYNONYMS,
)
from processing.synthcxr.findings import sample_findings
from processing.synthcxr.reports import INDICATIONS, mimic_report_text, write_report

# ---------------------------------------------------------------- the reference


def _flat(keys, space=re.escape(" ")):
    return "|".join(space.join(map(re.escape, key.split(" "))) for key in sorted(keys, key=len, reverse=True))


_AI = re.IGNORECASE | re.ASCII
_HEADER_ALIASES = list(clinical_text_medvl._HEADER_NAME)
REFERENCE_HEADER_RE = re.compile(
    r"(?m)(?:^|(?<=[.!?;]))[ \t]*(?:(?P<header>(?ai:" + _flat(_HEADER_ALIASES, r"[ \t]+") + r"))[ \t]*:"
    r"|(?P<colonless>(?ai:final[ \t]+report|addendum))[ \t]*$)"
    r"|(?<![\w-])(?P<upper>" + _flat([a.upper() for a in _HEADER_ALIASES], r"[ \t]+") + r")[ \t]*:"
)
REFERENCE_ABBREVIATION_RE = re.compile(
    r"(?<![\w/.-])(?:"
    r"(?P<shortsym>(?ai:" + _flat([k for k in SHORTHAND if not k[-1].isalnum()]) + r"))"
    r"|(?P<short>(?ai:" + _flat([k for k in SHORTHAND if k[-1].isalnum()]) + r"))(?![\w/])"
    r"(?P<shortdot>\.(?=\s*[a-z0-9]))?"
    r"|(?P<word>" + _flat(list(ABBREVIATIONS) + list(CONTEXTUAL)) + r")(?P<plural>s)?(?!\w)(?P<dot>\.(?=\s*[a-z]))?"
    r")"
)
REFERENCE_LATERALITY_RE = re.compile(
    r"(?P<middle>\b" + MIDDLE_LOBE_TO_LINGULA + r"\b)"
    r"|(?P<lingula>\b" + LINGULA_TO_MIDDLE_LOBE + r"\b)"
    r"|(?P<abbr>\b(?:" + _flat(LATERALITY_ABBREVIATIONS) + r")\b)"
    r"|(?P<greater>(?<![\w/])[LR]\s*>\s*[LR](?![\w/]))"
    r"|(?P<letter>(?<![\w/.-])(?:[LR]|Lt|Rt|LT|RT)(?=\.?\s*" + LATERALITY_CONTEXT + r"))"
    r"|(?P<word>\b(?:" + _flat(LATERALITY_WORDS) + r")\b(?!" + LATERALITY_FIXED + r"))",
    _AI,
)
_DEID_RULES = [
    (*clinical_deid_medvl._compile_gate(gate), re.compile(pattern), replacement)
    for gate, pattern, replacement, _, _ in clinical_deid_medvl._RULES
]
_TERM_RULES = [(re.compile(pattern, _AI), replacement) for _, pattern, replacement in SPELLING_RULES] + [
    (re.compile(r"\b" + pattern, _AI), replacement) for pattern, replacement in SYNONYMS.items()
]


def reference_deidentify(text):
    """Every rule whose gate the report passes, over the whole text, in order."""
    lowered, has_digit = text.lower(), re.search(r"\d", text) is not None
    for needs_digit, cues, pattern, replacement in _DEID_RULES:
        if (has_digit or not needs_digit) and (not cues or any(cue in lowered for cue in cues)):
            text = pattern.sub(replacement, text)
    return clinical_deid_medvl._RUN_OF_TOKENS.sub(clinical_deid_medvl.DEID_TOKEN, text)


def reference_standardize_terms(text):
    """Every spelling rule and synonym over the whole text, in order, ungated."""
    for pattern, replacement in _TERM_RULES:
        text = pattern.sub(lambda m: clinical_text_medvl._same_case(replacement, m.group(0)), text)
    return text


def reference_fit_case(expansion, text, start, end):
    """Capitals in an all-capitals sentence, a capital at a sentence start: every word of the
    sentence checked, the sentence start searched over all the text before the expansion."""
    sentence_start = max(text.rfind(mark, 0, start) for mark in ".!?:;\n") + 1
    sentence_end = min([i for i in (text.find(mark, end) for mark in ".!?:;\n") if i >= 0] or [len(text)])
    shorthand = {key.lower() for key in SHORTHAND}
    words = [word for word in clinical_text_medvl._WORD_RE.findall(text[sentence_start:start] + " " + text[end:sentence_end])
             if len(word) >= 3 and word not in ABBREVIATIONS and word.lower() not in shorthand and word != "DEID"]
    if words and all(word.isupper() for word in words):
        return expansion.upper()
    if clinical_text_medvl._SENTENCE_START_RE.search(text[:start]) and text[start].isupper():
        return expansion[0].upper() + expansion[1:]
    return expansion


def reference(monkeypatch):
    """The module's functions with their regexes and scans swapped for the reference ones."""
    monkeypatch.setattr(clinical_text_medvl, "_header_matches", REFERENCE_HEADER_RE.finditer)
    monkeypatch.setattr(clinical_text_medvl, "_ABBREVIATION_RE", REFERENCE_ABBREVIATION_RE)
    monkeypatch.setattr(clinical_text_medvl, "_LATERALITY_RE", REFERENCE_LATERALITY_RE)
    monkeypatch.setattr(clinical_text_medvl, "_fit_case", reference_fit_case)
    monkeypatch.setattr(clinical_text_medvl, "deidentify", reference_deidentify)
    monkeypatch.setattr(clinical_text_medvl, "standardize_terms", reference_standardize_terms)
    return clinical_text_medvl


# ---------------------------------------------------------------- the texts

_NAMES = ("Smith", "Nguyen", "O'Brien", "Garcia", "Kowalski", "Patel", "Chen", "Johnson")
_SHORTENED = {"pneumothorax": "PTX", "pneumonia": "PNA", "endotracheal tube": "ETT", "edema": "oedema", "with": "w/",
              "history of": "h/o", "left lower lobe": "LLL", "right lower lobe": "RLL", "nasogastric": "NG",
              "effusion": "L effusion", "Heart": "CARDIAC ENLARGEMENT. Heart", "localized": "localised"}


def synthcxr_reports(n, seed=0):
    """MIMIC-style SynthCXR reports with names, dates, times, numbers and abbreviations."""
    rng = random.Random(seed)
    reports = []
    for index in range(n):
        view = "AP" if rng.random() < 0.2 else "PA"
        findings_text, impression_text, _ = write_report(sample_findings(np.random.default_rng([seed, index])), view, rng)
        for word, short in _SHORTENED.items():
            if rng.random() < 0.4:
                findings_text = findings_text.replace(word, short)
        if rng.random() < 0.6:
            impression_text += (
                f" Findings discussed with Dr. {rng.choice(_NAMES)} by telephone at {rng.randint(1, 12)}:"
                f"{rng.randint(10, 59)} {rng.choice(('am', 'pm', 'P.M.'))} on {rng.randint(1, 12)}/{rng.randint(1, 28)}/"
                f"20{rng.randint(10, 23)}, pager {rng.randint(10000, 99999)}."
            )
        indication = rng.choice(INDICATIONS) + f" MRN {rng.randint(10**6, 10**8)}."
        reports.append(mimic_report_text(findings_text, impression_text, view, indication, rng))
    return reports


_PIECES = (
    list(ABBREVIATIONS) + list(CONTEXTUAL) + list(SHORTHAND) + _HEADER_ALIASES + list(LATERALITY_WORDS)
    + list(LATERALITY_ABBREVIATIONS) + ["final report", "addendum", "right middle lobe", "lingular"]
    + [word for _, pattern, _ in SPELLING_RULES for word in re.findall(r"[a-z]{3,}", pattern)]
    + [" ".join(re.findall(r"[a-z]+", pattern)) for pattern in SYNONYMS]
    + ["oedema", "haemothorax", "anaemia", "localised", "hospitalisation", "characterised", "emphasise", "tumours",
       "grey", "centres", "paediatric", "x ray", "X-RAY", "ground glass opacities", "lymph adenopathy"]
    + ["MRN", "MR #", "Medical record number", "accession #", "acc#", "Patient ID", "pt id", "unit no.", "case #",
       "study id", "order number", "exam #", "visit no", "account number", "ID", "pager", "beeper", "pgr", "ext.",
       "extension", "phone", "tel", "telephone", "cell", "fax", "contact", "Dr.", "DR", "Drs", "Doctor", "Mr.", "MR",
       "Mrs", "Ms", "MS.", "Miss", "Prof.", "Professor", "Nurse", "discussed with", "communicated to", "conveyed to",
       "spoke with", "notified", "paged", "informed", "signed by", "Signed:", "dictated by", "reported to",
       "read by", "reviewed by", "Attending:", "radiologist", "resident", "technologist", "MD", "M.D.", "RN",
       "PA-C", "DO", "PhD", "FRCR", "age", "aged", "years", "yrs", "y/o", "y.o.", "year-old", "on", "from", "since",
       "dated", "of", "until", "through", "March", "Sept.", "jan", "Monday", "am", "p.m.", "hours", "h", "hrs",
       "cm", "mm", "units", "%", "John Smith", "Jane Doe", "O'Neil", "A. Jones", "j.smith@hospital.org",
       "http://x.org/a", "www.example.com", "___", "__", "[DEID]", "vs", "vs.", "approx"]
    + ["stage", "grade", "type", "view", "window", "angle", "angles", "sat", "upright", "and", "&", "main",
       "enlarged", "base", "side", "sided", "-sided", "effusion", "heart failure", "atrial", "ventricular"]
)
_GLUE = ["", " ", " ", " ", "  ", "\n", "\t", "\r\n", "\x0b", "\x1c", "\u00a0", "\u2003", ".", ". ", ", ", ": ", ":",
         "; ", "/", "-", " - ", "(", ")", "#", "'", "!", "?", " > ", ">", "<", "+", "@", "_"]
_ODD = ["é", "ß", "ſ", "\u212a", "İ", "ﬁ", "½", "\u0663", "\u200b", "\u00b2", "Ⅳ", "中"]


def _digits(rng):
    form = rng.randrange(9)
    d = lambda k: "".join(rng.choice("0123456789") for _ in range(k))  # noqa: E731
    return [d(rng.randint(1, 8)), f"{d(rng.randint(1, 2))}/{d(rng.randint(1, 2))}/{d(rng.choice((2, 4)))}",
            f"{d(2)}:{d(2)}", f"{d(3)}-{d(3)}-{d(4)}", f"({d(3)}) {d(3)}.{d(4)}", f"+{d(2)} {d(2)} {d(4)} {d(4)}",
            f"{d(1)}.{d(rng.randint(1, 2))}", f"{rng.choice(('19', '20', '9', '1'))}{d(rng.randint(0, 2))}",
            f"{rng.choice('ABZ')}{d(rng.randint(4, 8))}"][form]


def _cased(rng, piece):
    return rng.choice((piece, piece, piece.lower(), piece.upper(), piece.title(), piece.swapcase()))


def adversarial_texts(n, seed=0):
    """Random strings of table keys, identifiers, digits and odd characters, glued every way."""
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(1, 30)):
            kind = rng.random()
            piece = (_cased(rng, rng.choice(_PIECES)) if kind < 0.75 else _digits(rng) if kind < 0.92
                     else rng.choice(_ODD))
            parts += (piece, rng.choice(_GLUE))
        text = "".join(parts)
        texts.append(text if text.strip() else "x" + text)
    return texts


REPORTS = synthcxr_reports(600)
ADVERSARIAL = adversarial_texts(2400)
TEXTS = REPORTS + ADVERSARIAL


def test_the_corpus_reaches_every_step():
    normalizer = clinical_text_medvl.ClinicalTextNormalizer()
    outputs = [normalizer(text) for text in REPORTS[:200]]
    assert sum(clinical_deid_medvl.DEID_TOKEN in out for out in outputs) > 100
    assert sum("pneumothorax" in out for out in outputs) > 20 and sum("edema" in out for out in outputs) > 20
    assert sum(not text.isascii() for text in ADVERSARIAL) > 300


# ---------------------------------------------------------------- the comparisons


def _outputs(function, texts):
    return [function(text) for text in texts]


def _assert_same(fast, slow, texts):
    mismatches = [(text, a, b) for text, a, b in zip(texts, fast, slow) if a != b]
    assert not mismatches, f"{len(mismatches)} differ; first: {mismatches[0]!r}"


def test_header_scan_finds_what_the_whole_text_scan_finds():
    spans = lambda matches: [(m.span(), m.groupdict()) for m in matches]  # noqa: E731
    fast = [spans(clinical_text_medvl._header_matches(text)) for text in TEXTS]
    _assert_same(fast, [spans(REFERENCE_HEADER_RE.finditer(text)) for text in TEXTS], TEXTS)


def test_deidentify_equals_the_rule_by_rule_reference():
    _assert_same(_outputs(clinical_deid_medvl.deidentify, TEXTS), _outputs(reference_deidentify, TEXTS), TEXTS)


def test_standardize_terms_equals_the_rule_by_rule_reference():
    texts = TEXTS + [clinical_text_medvl.expand_abbreviations(text) for text in REPORTS]
    _assert_same(_outputs(clinical_text_medvl.standardize_terms, texts), _outputs(reference_standardize_terms, texts), texts)


@pytest.mark.parametrize("name", ["expand_abbreviations", "swap_laterality", "extract_sections"])
def test_step_equals_the_reference(name, monkeypatch):
    fast = _outputs(getattr(clinical_text_medvl, name), TEXTS)
    slow = _outputs(getattr(reference(monkeypatch), name), TEXTS)
    _assert_same(fast, slow, TEXTS)


@pytest.mark.parametrize("settings", [{}, {"extract_sections": False}, {"keep_section_headers": True, "collapse_whitespace": False}])
def test_normalizer_equals_the_reference(settings, monkeypatch):
    texts = [text for text in TEXTS if text.strip()]
    fast = _outputs(clinical_text_medvl.ClinicalTextNormalizer(**settings), texts)
    slow = _outputs(reference(monkeypatch).ClinicalTextNormalizer(**settings), texts)
    _assert_same(fast, slow, texts)
