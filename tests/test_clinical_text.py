import json
import random
import re

import pytest

from processing.clinical_abbreviations_medvl import ABBREVIATIONS, CONTEXTUAL, SHORTHAND
from processing.clinical_text_medvl import (
    DEID_TOKEN,
    ClinicalTextNormalizer,
    deidentify,
    expand_abbreviations,
    extract_sections,
    standardize_terms,
    swap_laterality,
)

MIMIC_REPORT = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___ year old woman with SOB, h/o CHF  // eval for PNA

 TECHNIQUE:  Chest PA and lateral

 COMPARISON:  Chest radiograph from 03/12/2019 and ___.

 FINDINGS:

 PA and lateral views of the chest provided.  There is a small L pleural effusion and
 mild pulmonary oedema.  The PA is enlarged.  ETT tip 4 cm above the carina.  NG tube
 in the stomach.  No PTX.  Cardiac enlargement is stable.  L > R basilar atelectasis.

 IMPRESSION:

 1. Small left effusion and mild CHF.
 2. Findings were discussed with Dr. John Smith by telephone at 10:30 am on March 3, 2019,
 pager 54321, MRN: 12345678, phone (617) 555-1234.
"""

PORTABLE_REPORT = """EXAMINATION: CHEST (PORTABLE AP)
Clinical   History: 94-year-old man s/p CABG, r/o PTX.  Seen by Mr. Robert O'Neil on Jan 5, 2018.
Comparison:  12-Mar-2019, 2019-03-12 14:45.
Findings :
AP portable upright view.  R IJ central line tip in the SVC.  Small R effusion.  Stage IV
lung cancer with RLL mass measuring 3.2 x 2.1 cm, previously 2.8-3.0 cm.  2 L of O2 by NC.
Impression:
Right IJ line in standard position.  No pneumothorax.  Accession number: A1234567.
Electronically signed by Jane Doe, MD on Monday, ___ at 9 pm.  Call 617.555.0199, ext. 4411.
"""

OPENI_STYLE = (
    "Comparison: None. Indication: Chest pain. Findings: The heart size is normal. Haemorrhage is "
    "not seen. Ground glass opacities in the LUL. Impression: No acute disease. Conclusion: Normal chest."
)


# ---------------------------------------------------------------- sections


def test_extract_sections_from_a_full_report():
    sections = extract_sections(MIMIC_REPORT)
    assert {"examination", "indication", "technique", "comparison", "findings", "impression"} <= set(sections)
    assert sections["findings"].startswith("PA and lateral views of the chest provided.")
    assert sections["findings"].endswith("basilar atelectasis.")
    assert sections["impression"].startswith("1. Small left effusion")
    assert "INDICATION" not in sections["findings"] and "FINDINGS" not in sections["impression"]


def test_headers_in_any_case_spacing_and_aliases():
    sections = extract_sections(PORTABLE_REPORT)
    assert sections["history"].startswith("94-year-old man")
    assert sections["findings"].startswith("AP portable upright view.")
    assert sections["impression"].startswith("Right IJ line")
    one_line = extract_sections(OPENI_STYLE)
    assert one_line["findings"].startswith("The heart size is normal.")
    # "Conclusion" is an alias of the impression: both parts are kept, in order.
    assert one_line["impression"] == "No acute disease. Normal chest."
    assert one_line["indication"] == "Chest pain."


def test_capital_headers_anywhere_and_combined_headers():
    assert extract_sections("FINDINGS: No acute process IMPRESSION: Normal chest.") == {
        "findings": "No acute process", "impression": "Normal chest."}
    assert extract_sections("History: cough.\nFindings and impression: Clear lungs.") == {
        "history": "cough.", "findings": "Clear lungs."}
    # A lower-case header word inside a sentence is text, not a header.
    assert extract_sections("Compared with the study: no change.") == {"preamble": "Compared with the study: no change."}


def test_normalizer_keeps_only_findings_and_impression():
    out = ClinicalTextNormalizer()(MIMIC_REPORT)
    assert out.startswith("Posteroanterior and lateral views of the chest provided.")
    assert "year old woman" not in out and "Chest radiograph from" not in out and "EXAMINATION" not in out
    assert "Small left effusion and mild congestive heart failure" in out
    with_headers = ClinicalTextNormalizer(keep_section_headers=True, sections=("impression", "findings"))(MIMIC_REPORT)
    assert with_headers.startswith("IMPRESSION: 1. Small left effusion") and "FINDINGS: Posteroanterior" in with_headers


def test_report_without_requested_sections_is_kept_whole():
    plain = "Heart size is normal. No focal consolidation, effusion or PTX."
    assert extract_sections(plain) == {"preamble": plain}
    assert ClinicalTextNormalizer()(plain) == "Heart size is normal. No focal consolidation, effusion or pneumothorax."
    only_history = "HISTORY: cough.\nThe lungs are clear."
    assert ClinicalTextNormalizer()(only_history) == "HISTORY: cough. The lungs are clear."


def test_unknown_section_name_is_rejected():
    with pytest.raises(ValueError, match="unknown section names"):
        ClinicalTextNormalizer(sections=("findings", "discussion"))


# ---------------------------------------------------------------- de-identification

IDENTIFIERS = {
    "MIMIC_REPORT": (MIMIC_REPORT, ["John", "Smith", "03/12/2019", "10:30", "March 3", "2019", "54321",
                                    "12345678", "617", "555-1234", "___"]),
    "PORTABLE_REPORT": (PORTABLE_REPORT, ["94-year", "Robert", "O'Neil", "Jan 5", "2018", "12-Mar-2019",
                                          "2019-03-12", "14:45", "A1234567", "Jane", "Doe", "Monday", "9 pm",
                                          "617.555.0199", "4411", "___"]),
}


@pytest.mark.parametrize("name", sorted(IDENTIFIERS))
def test_no_identifier_survives(name):
    report, identifiers = IDENTIFIERS[name]
    for normalizer in (ClinicalTextNormalizer(), ClinicalTextNormalizer(extract_sections=False)):
        out = normalizer(report)
        for identifier in identifiers:
            assert identifier not in out, (identifier, out)
        assert DEID_TOKEN in out
        # No date-, time- or phone-shaped string and no long digit run is left.
        assert not re.search(r"\d+([/.-])\d+\1\d+|\d{1,2}:\d{2}|\d{5,}|\b(?:19|20)\d\d\b", out), out


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Seen on Jan 5, 2018 and on 5th of March 2019.", "Seen on [DEID] and on [DEID]."),
        ("Prior from 2019-03-12, 3.12.19 and 12/2019.", "Prior from [DEID] and [DEID]."),
        ("Called at 14:30 and again at 2 p.m. and at 1430 hours.", "Called at [DEID] and again at [DEID] and at [DEID]."),
        ("Paged Dr. O'Brien, pager #4411, tel +44 20 7946 0958.", "Paged Dr. [DEID], pager #[DEID], tel [DEID]."),
        ("Discussed with John Smith and Nurse Ratched; read by DR. A. JONES.",
         "Discussed with [DEID] and Nurse [DEID]; read by DR. [DEID]."),
        ("MRN: 0012345, Medical record number 778899, accession #AB12345, patient ID 44-1234.",
         "MRN: [DEID], Medical record number [DEID], accession #[DEID], patient ID [DEID]."),
        ("___ ___, ___ at ___", "[DEID] at [DEID]"),
        ("Write to j.smith@hospital.org or www.hospital.org/portal.", "Write to [DEID] or [DEID]"),
        ("A 92-year-old and a 95 yo, but an 89 year old.", "A [DEID]-year-old and a [DEID] yo, but an 89 year old."),
        ("Age: 97. Seen on 3/12, improved since 4/1; 1/2 of the lung.", "Age: [DEID]. Seen on [DEID], improved since [DEID]; 1/2 of the lung."),
        ("Attending: Mary Jones\nRadiologist: Li Wei\nSigned: Peter Parker", "Attending: [DEID]\nRadiologist: [DEID]\nSigned: [DEID]"),
    ],
)
def test_deidentify_formats(text, expected):
    assert deidentify(text) == expected


def test_measurements_and_clinical_numbers_survive_deidentification():
    text = ("Nodule 1.5 x 2.0 cm, previously 1.2-1.4 cm, at T4-T5; 3-4 mm; MR is moderate; HR 110; 2 L O2; "
            "heparin 10000 units.")
    assert deidentify(text) == text


# ---------------------------------------------------------------- abbreviations


def test_abbreviation_table_is_large_and_consistent():
    assert len(ABBREVIATIONS) + len(SHORTHAND) + len(CONTEXTUAL) >= 150
    assert not set(ABBREVIATIONS) & set(CONTEXTUAL)
    assert all(key[-1].isalnum() and " " not in key for key in list(ABBREVIATIONS) + list(CONTEXTUAL))
    assert all(expansion and expansion == expansion.strip() for expansion in {**ABBREVIATIONS, **SHORTHAND}.values())


@pytest.mark.parametrize(
    "text, expected",
    [
        ("PA and lateral views.", "Posteroanterior and lateral views."),
        ("Single PA view of the chest.", "Single posteroanterior view of the chest."),
        ("The main PA is enlarged.", "The main pulmonary artery is enlarged."),
        ("Elevated PA pressures.", "Elevated pulmonary artery pressures."),
        ("Swan-Ganz catheter tip in the right PA.", "Swan-Ganz catheter tip in the right pulmonary artery."),
        ("AP portable view.", "Anteroposterior portable view."),
        ("The AP window is clear.", "The aortopulmonary window is clear."),
        ("Blunting of the CP angles.", "Blunting of the costophrenic angles."),
        ("Presents with CP and SOB on RA.", "Presents with chest pain and shortness of breath on room air."),
        ("Catheter tip in the RA.", "Catheter tip in the right atrium."),
        ("Small L effusion and R base opacity.", "Small left effusion and right base opacity."),
        ("Effusions, L > R.", "Effusions, left greater than right."),
        ("Rt. lung base and Lt hemithorax.", "Right lung base and left hemithorax."),
        ("Pt is s/p CABG w/ sternal wires, h/o COPD.",
         "Patient is status post coronary artery bypass graft with sternal wires, history of chronic obstructive pulmonary disease."),
        ("PTX. PICCs removed. Small PTXs.", "Pneumothorax. Peripherally inserted central catheters removed. Small pneumothoraces."),
        ("ETT and NG tube in place; LLL collapse.", "Endotracheal tube and nasogastric tube in place; left lower lobe collapse."),
        ("SMALL L EFFUSION, NO PTX.", "SMALL LEFT EFFUSION, NO PNEUMOTHORAX."),
        ("IV contrast given.", "Intravenous contrast given."),
        ("Opacity approx. 2 cm, c/f atelectasis vs. PNA; pt. is intubated.",
         "Opacity approximately 2 cm, concerning for atelectasis versus pneumonia; patient is intubated."),
    ],
)
def test_expansions_in_context(text, expected):
    assert expand_abbreviations(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "Stage IV disease.",          # roman numeral, not intravenous
        "Give 2 L of fluid.",          # litres, not left
        "L1 compression fracture.",    # vertebra
        "The L is ambiguous here.",    # a lone letter without a side context
        "CHFx and PTXCD are not words of the table.",
        "Findings in the pa and ap notes.",  # lower-case letters are not the abbreviations
        "The PA is not described.",    # ambiguous PA stays as written
    ],
)
def test_non_expansions(text):
    assert expand_abbreviations(text) == text


def test_pa_view_is_never_pulmonary_artery():
    for text in ("PA and lateral", "PA view", "PA/lateral", "upright PA", "PA and AP radiographs"):
        assert "pulmonary artery" not in expand_abbreviations(text)
        assert "posteroanterior" in expand_abbreviations(text).lower()


# ---------------------------------------------------------------- terminology


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Pulmonary oedema and haemorrhage.", "Pulmonary edema and hemorrhage."),
        ("OEDEMA; Haematoma; oesophageal tumour; paediatric; anaemia.", "EDEMA; Hematoma; esophageal tumor; pediatric; anemia."),
        ("Localised haemothorax and ischaemic change.", "Localized hemothorax and ischemic change."),
        ("Small pleural fluid collection.", "Small pleural effusion."),
        ("Cardiac enlargement is stable.", "Cardiomegaly is stable."),
        ("Ground glass opacities and air space disease.", "Ground-glass opacities and airspace disease."),
        ("Hemi-diaphragms and cardio mediastinal contour; chest x-rays.", "Hemidiaphragms and cardiomediastinal contour; chest radiographs."),
        ("Hilar adenopathy but no lymphadenopathy elsewhere.", "Hilar lymphadenopathy but no lymphadenopathy elsewhere."),
    ],
)
def test_terminology(text, expected):
    assert standardize_terms(text) == expected


# ---------------------------------------------------------------- the normaliser as a whole


def test_each_step_can_be_switched_off():
    text = "FINDINGS: Small L effusion, oedema. Dr. Smith notified.\nIMPRESSION: No PTX."
    raw = ClinicalTextNormalizer(False, False, False, False)(text)
    assert raw == " ".join(text.split())
    assert ClinicalTextNormalizer(deidentify=False)(text).count("Smith") == 1
    assert "L effusion" in ClinicalTextNormalizer(expand_abbreviations=False)(text)
    assert "oedema" in ClinicalTextNormalizer(standardize_terms=False)(text)
    assert "FINDINGS" in ClinicalTextNormalizer(extract_sections=False)(text)
    assert "\n" in ClinicalTextNormalizer(collapse_whitespace=False)(text)
    assert ClinicalTextNormalizer()(text) == "Small left effusion, edema. Dr. [DEID] notified. No pneumothorax."


def test_to_dict_round_trip_and_determinism():
    normalizer = ClinicalTextNormalizer(deidentify=False, sections=("impression",), keep_section_headers=True)
    settings = json.loads(json.dumps(normalizer.to_dict()))
    rebuilt = ClinicalTextNormalizer(**settings)
    assert rebuilt == normalizer and rebuilt.sections == ("impression",)
    assert rebuilt(MIMIC_REPORT) == normalizer(MIMIC_REPORT) == normalizer(MIMIC_REPORT)
    assert ClinicalTextNormalizer()([MIMIC_REPORT, PORTABLE_REPORT]) == [
        ClinicalTextNormalizer()(MIMIC_REPORT), ClinicalTextNormalizer()(PORTABLE_REPORT)]


@pytest.mark.parametrize("bad, message", [("", "is empty"), ("  \n ", "is empty"), (None, "must be a string"), (3, "must be a string")])
def test_bad_text_names_the_item(bad, message):
    normalizer = ClinicalTextNormalizer()
    with pytest.raises(ValueError, match=message):
        normalizer(bad)
    with pytest.raises(ValueError, match=f"report at index 2 {message}"):
        normalizer(["No PTX.", MIMIC_REPORT, bad])


# ---------------------------------------------------------------- laterality


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Left effusion, right PTX.", "Right effusion, left PTX."),
        ("LEFT-SIDED PICC; Right-sided port; leftward shift.", "RIGHT-SIDED PICC; Left-sided port; rightward shift."),
        ("LLL and RUL opacities, LIJ line.", "RLL and LUL opacities, RIJ line."),
        ("L base atelectasis, R effusion, L > R.", "R base atelectasis, L effusion, R > L."),
        ("Rt. lung clear, Lt effusion.", "Lt. lung clear, Rt effusion."),
        ("Mild levoscoliosis.", "Mild dextroscoliosis."),
        ("Bilateral effusions, midline trachea.", "Bilateral effusions, midline trachea."),
        ("Left ventricular enlargement; right atrial lead.", "Left ventricular enlargement; right atrial lead."),
        ("RML pneumonia; right middle lobe collapse.", "lingula pneumonia; lingula collapse."),
        ("Lingular atelectasis.", "Right middle lobe atelectasis."),
        ("2 L of fluid at L1; cleft lip.", "2 L of fluid at L1; cleft lip."),
    ],
)
def test_swap_laterality(text, expected):
    assert swap_laterality(text) == expected


@pytest.mark.parametrize("report", [MIMIC_REPORT, PORTABLE_REPORT, OPENI_STYLE])
def test_swapping_twice_restores_the_report(report):
    once = swap_laterality(report)
    assert once != report
    assert swap_laterality(once) == report


def test_unicode_lookalikes_and_random_text_never_break_the_normaliser():
    # Under Unicode case folding "ſ" matches "s" and "K" (Kelvin) "k"; matching is ASCII-only.
    assert ClinicalTextNormalizer()("ſ/p PTX, leftwardſ shift. ImpreſſION: K") == "ſ/p pneumothorax, leftwardſ shift. ImpreſſION: K"
    rng = random.Random(0)
    pieces = ["PA", "L", "R", "s/p", "PTX", "Dr.", "FINDINGS:", "IMPRESSION:", "___", "12/03/2019", "10:30", "Rt.",
              "LLL", "RML", "left", "lingula", "oedema", "W/O", "Y.O.", "[DEID]", "L > R", "IV", "é", "ß", "\u200b", "½"]
    normalizer = ClinicalTextNormalizer()
    for _ in range(200):
        text = " ".join(rng.choice(pieces) for _ in range(rng.randint(1, 25)))
        out = normalizer(text)
        assert isinstance(out, str) and out and out == normalizer(text)
        assert swap_laterality(swap_laterality(text)).count("[DEID]") == text.count("[DEID]")
