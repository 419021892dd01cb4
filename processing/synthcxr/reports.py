"""Radiology reports and CheXpert-style labels for SynthCXR studies.

Every sentence is written together with what it asserts about the CheXpert observations:
1 (present), 0 (negated), -1 (uncertain). The study's labels are those assertions merged the
way CheXpert's labeler merges mentions (positive beats uncertain beats negative), and an
observation no sentence mentions stays None (blank), so labels and text always agree.
"""

import textwrap

from processing.chexpert import CHEXPERT_LABELS

from .anatomy import LOBE_NAMES
from .findings import FINDING_KINDS

PATHOLOGY_KINDS = tuple(kind for kind in FINDING_KINDS if kind != "support_device")

INDICATIONS = (
    "___ with shortness of breath.",
    "___ year old with cough and fever, evaluate for pneumonia.",
    "Chest pain.",
    "Preoperative evaluation.",
    "___M with dyspnea on exertion.",
    "___F with hypoxia.",
    "Evaluate for interval change.",
    "Line placement.",
    "History of malignancy, assess for metastatic disease.",
    "Fever.",
)


class _Sentences:
    """Sentences with the label assertions each makes."""

    def __init__(self):
        self.findings, self.impression, self.assertions = [], [], []

    def finding(self, text, **labels):
        self.findings.append(text)
        self.assertions.append(labels)

    def impress(self, text, **labels):
        self.impression.append(text)
        self.assertions.append(labels)

    def labels(self):
        merged = dict.fromkeys(CHEXPERT_LABELS)
        rank = {None: 0, 0: 1, -1: 2, 1: 3}
        for assertion in self.assertions:
            for key, value in assertion.items():
                name = key.replace("_", " ")
                if name not in merged:
                    raise KeyError(f"unknown CheXpert label {name!r}")
                if rank[value] > rank[merged[name]]:
                    merged[name] = value
        return merged


# Statements that assert no CheXpert observation (or only a negative one), for variety.
_INCIDENTAL_MEDIASTINUM = (
    "Mediastinal and hilar contours are unremarkable.",
    "Hilar contours are normal.",
    "The aorta is mildly tortuous.",
    "Atherosclerotic calcification of the aortic knob.",
)
_BONES = (
    ("No acute osseous abnormality.", {}),
    ("No displaced rib fracture is seen.", {"Fracture": 0}),
    ("Visualized osseous structures are intact.", {}),
    ("Mild degenerative changes of the thoracic spine.", {}),
)


def _side(side, rng, abbreviation_rate=0.07):
    if side in ("left", "right") and rng.random() < abbreviation_rate:
        return side[0].upper()
    return side


def _lobe(code, rng):
    return code if code != "lingula" and rng.random() < 0.3 else LOBE_NAMES[code]


def _size_text(size_mm, rng):
    return f"{size_mm / 10:.1f} cm" if rng.random() < 0.35 else f"{size_mm:.0f} mm"


def write_report(findings, view, rng):
    """(findings_text, impression_text, labels) for a study; `rng` is a random.Random."""
    s = _Sentences()
    by_kind = {}
    for finding in findings:
        by_kind.setdefault(finding.kind, []).append(finding)
    devices = by_kind.get("support_device", [])
    pathology = [f for f in findings if f.kind in PATHOLOGY_KINDS]

    for device in devices:
        s.finding(_device_sentence(device, rng), Support_Devices=1)
    if view == "AP" and rng.random() < 0.3:
        s.finding(rng.choice(("Lung volumes are low.", "Portable technique limits assessment.")))
    _heart(s, by_kind.get("cardiomegaly", []), rng)
    if rng.random() < 0.3:
        s.finding(rng.choice(_INCIDENTAL_MEDIASTINUM))
    _lungs(s, by_kind, rng)
    _pleura(s, by_kind, rng)
    if rng.random() < 0.5:
        text, labels = rng.choice(_BONES)
        s.finding(text, **labels)

    if not pathology:
        s.impress(
            rng.choice(
                (
                    "No acute cardiopulmonary process.",
                    "No acute cardiopulmonary abnormality.",
                    "Normal chest radiograph.",
                    "No acute intrathoracic process.",
                    "No acute findings.",
                )
            ),
            No_Finding=1,
        )
        if rng.random() < 0.2:
            s.impress("No evidence of pneumonia.", Pneumonia=0)
    else:
        impressions = [_impression(f, rng) for f in pathology]
        numbered = len(impressions) > 1 and rng.random() < 0.5
        for number, (text, labels) in enumerate(impressions, 1):
            s.impress(f"{number}. {text}" if numbered else text, **labels)
    if devices:
        s.impress(
            rng.choice(
                (
                    "Support devices in standard position.",
                    "Lines and tubes as described above.",
                    "Support devices as above.",
                )
            ),
            Support_Devices=1,
        )
    return " ".join(s.findings), " ".join(s.impression), s.labels()


def _heart(s, cardiomegaly, rng):
    if not cardiomegaly:
        if rng.random() < 0.85:
            text, labels = rng.choice(
                (
                    ("The heart size is normal.", {"Cardiomegaly": 0}),
                    ("Heart size is within normal limits.", {"Cardiomegaly": 0}),
                    (
                        "The cardiomediastinal silhouette is within normal limits.",
                        {"Cardiomegaly": 0, "Enlarged_Cardiomediastinum": 0},
                    ),
                    ("Normal cardiomediastinal contours.", {"Cardiomegaly": 0, "Enlarged_Cardiomediastinum": 0}),
                )
            )
            s.finding(text, **labels)
        return
    finding = cardiomegaly[0]
    if finding.uncertain:
        s.finding(
            rng.choice(
                ("Heart size is borderline; mild cardiomegaly cannot be excluded.", "Possible mild cardiomegaly.")
            ),
            Cardiomegaly=-1,
        )
        return
    degree = {"mild": "mildly", "moderate": "moderately", "severe": "markedly"}[finding.severity]
    s.finding(
        rng.choice(
            (
                f"The heart is {degree} enlarged.",
                f"{finding.severity.capitalize()} cardiomegaly.",
                f"The cardiac silhouette is {degree} enlarged.",
                f"There is {finding.severity} enlargement of the cardiac silhouette.",
            )
        ),
        Cardiomegaly=1,
    )


def _lungs(s, by_kind, rng):
    for finding in by_kind.get("consolidation", []):
        lobe = _lobe(finding.location, rng)
        if finding.uncertain:
            s.finding(f"Subtle opacity in the {lobe}, possibly early consolidation.", Lung_Opacity=1, Consolidation=-1)
        else:
            s.finding(
                rng.choice(
                    (
                        f"Focal consolidation in the {lobe}.",
                        f"There is airspace consolidation in the {lobe}.",
                        f"Dense opacity in the {lobe} consistent with consolidation.",
                    )
                ),
                Lung_Opacity=1,
                Consolidation=1,
            )
    for finding in by_kind.get("nodule", []):
        size, lobe = _size_text(finding.size_mm, rng), _lobe(finding.location, rng)
        if finding.uncertain:
            s.finding(
                f"Possible {size} nodular opacity in the {lobe}, which may represent a nipple shadow.", Lung_Lesion=-1
            )
        else:
            s.finding(
                rng.choice(
                    (f"There is a {size} nodule in the {lobe}.", f"A {size} pulmonary nodule projects over the {lobe}.")
                ),
                Lung_Lesion=1,
            )
    for finding in by_kind.get("atelectasis", []):
        where = "at both lung bases" if finding.side == "bilateral" else f"at the {_side(finding.side, rng)} lung base"
        if finding.uncertain:
            s.finding(f"Streaky opacity {where} may reflect atelectasis.", Atelectasis=-1)
        elif finding.side == "bilateral" and rng.random() < 0.5:
            s.finding("Bibasilar plate-like atelectasis.", Atelectasis=1)
        else:
            s.finding(
                rng.choice(
                    (
                        f"Plate-like atelectasis {where}.",
                        f"Linear opacity {where} consistent with subsegmental atelectasis.",
                    )
                ),
                Atelectasis=1,
            )
    for finding in by_kind.get("edema", []):
        if finding.uncertain:
            s.finding("Possible mild interstitial edema.", Edema=-1)
        else:
            s.finding(
                rng.choice(
                    (
                        f"{finding.severity.capitalize()} pulmonary edema.",
                        f"Perihilar haziness and vascular congestion consistent with {finding.severity} pulmonary edema.",
                    )
                ),
                Edema=1,
            )
    lung_kinds = {"consolidation", "nodule", "atelectasis", "edema"} & set(by_kind)
    if not lung_kinds and rng.random() < 0.9:
        s.finding(
            rng.choice(
                ("The lungs are clear.", "Lungs are clear bilaterally.", "The lungs are well expanded and clear.")
            ),
            Lung_Opacity=0,
            Consolidation=0,
        )
    elif "consolidation" not in lung_kinds and rng.random() < 0.7:
        s.finding("No focal consolidation.", Consolidation=0)
    if "edema" not in lung_kinds and rng.random() < 0.5:
        s.finding(rng.choice(("No pulmonary edema.", "There is no pulmonary vascular congestion or edema.")), Edema=0)


def _pleura(s, by_kind, rng):
    effusions, pneumothoraces = by_kind.get("pleural_effusion", []), by_kind.get("pneumothorax", [])
    for finding in effusions:
        s.finding(_effusion_text(finding, rng), Pleural_Effusion=-1 if finding.uncertain else 1)
    for finding in pneumothoraces:
        side = _side(finding.side, rng)
        if finding.uncertain:
            s.finding(
                rng.choice(
                    (
                        f"Possible tiny {side} apical pneumothorax.",
                        f"A tiny {side} apical pneumothorax cannot be excluded.",
                    )
                ),
                Pneumothorax=-1,
            )
        else:
            name = "PTX" if rng.random() < 0.1 else "pneumothorax"
            s.finding(
                rng.choice(
                    (
                        f"There is a {finding.severity} {side} apical {name}.",
                        f"{finding.severity.capitalize()} {side} {name} with a visible visceral pleural line.",
                    )
                ),
                Pneumothorax=1,
            )
    if not effusions and not pneumothoraces:
        text = rng.choice(
            (
                "No pleural effusion or pneumothorax.",
                "There is no pleural effusion or pneumothorax.",
                "No effusion or PTX.",
                "No pleural effusion, pneumothorax or focal consolidation.",
            )
        )
        labels = {"Pleural_Effusion": 0, "Pneumothorax": 0}
        if "focal consolidation" in text:
            if "consolidation" in by_kind:
                text = "No pleural effusion or pneumothorax."
            else:
                labels["Consolidation"] = 0
        s.finding(text, **labels)
    elif not effusions:
        s.finding(
            rng.choice(("No pleural effusion.", "No pleural effusions.", "The costophrenic angles are sharp.")),
            Pleural_Effusion=0,
        )
    elif not pneumothoraces:
        s.finding(rng.choice(("No pneumothorax.", "There is no pneumothorax.", "No PTX.")), Pneumothorax=0)


def _effusion_text(finding, rng):
    if finding.side == "bilateral":
        if finding.uncertain:
            return "Blunting of both costophrenic angles may reflect small pleural effusions."
        return rng.choice(
            (
                f"{finding.severity.capitalize()} bilateral pleural effusions.",
                f"There are {finding.severity} bilateral pleural effusions.",
            )
        )
    side = _side(finding.side, rng)
    if finding.uncertain:
        return rng.choice(
            (
                f"Blunting of the {side} costophrenic angle may reflect a small pleural effusion.",
                f"Possible small {side} pleural effusion.",
            )
        )
    return rng.choice(
        (
            f"{finding.severity.capitalize()} {side} pleural effusion.",
            f"There is a {finding.severity} {side} pleural effusion with a meniscus.",
            f"{finding.severity.capitalize()} {side} pleural effusion with blunting of the costophrenic angle.",
        )
    )


def _device_sentence(device, rng):
    if device.device == "ett":
        return rng.choice(
            ("Endotracheal tube terminates in the mid trachea.", "ETT in standard position above the carina.")
        )
    if device.device == "ngt":
        return rng.choice(
            (
                "Nasogastric tube courses below the diaphragm with tip in the stomach.",
                "NGT tip in the stomach.",
                "Enteric tube terminates in the stomach.",
            )
        )
    if device.device == "central_line":
        if device.location == "right internal jugular":
            return rng.choice(
                (
                    "Right internal jugular central venous catheter terminates in the SVC.",
                    "Right IJ line tip in the mid SVC.",
                )
            )
        return rng.choice(
            (
                "Left subclavian central venous catheter with tip in the SVC.",
                "Left subclavian line terminates in the SVC.",
            )
        )
    return rng.choice(
        (
            "Left chest wall pacemaker with leads in the right atrium and right ventricle.",
            "Dual-lead pacemaker device overlies the left chest.",
        )
    )


def _impression(finding, rng):
    """The impression line for one pathological finding, with its label assertions."""
    kind, uncertain = finding.kind, finding.uncertain
    if kind == "cardiomegaly":
        return (
            "Borderline heart size; possible mild cardiomegaly."
            if uncertain
            else rng.choice(("Cardiomegaly.", f"{finding.severity.capitalize()} cardiomegaly."))
        ), {"Cardiomegaly": -1 if uncertain else 1}
    if kind == "pleural_effusion":
        return _effusion_text(finding, rng), {"Pleural_Effusion": -1 if uncertain else 1}
    if kind == "pneumothorax":
        if uncertain:
            return f"Possible tiny {finding.side} apical pneumothorax.", {"Pneumothorax": -1}
        return rng.choice(
            (
                f"{finding.severity.capitalize()} {finding.side} pneumothorax.",
                f"{_side(finding.side, rng, 0.3).capitalize()} PTX.",
            )
        ), {"Pneumothorax": 1}
    if kind == "consolidation":
        lobe = _lobe(finding.location, rng)
        if uncertain:
            return f"Possible early consolidation in the {lobe}.", {"Consolidation": -1}
        return rng.choice(
            (
                (
                    f"{lobe[0].upper() + lobe[1:]} consolidation, concerning for pneumonia.",
                    {"Consolidation": 1, "Pneumonia": -1},
                ),
                (f"{lobe[0].upper() + lobe[1:]} pneumonia.", {"Consolidation": 1, "Pneumonia": 1}),
                (
                    f"Focal consolidation in the {lobe}; pneumonia cannot be excluded.",
                    {"Consolidation": 1, "Pneumonia": -1},
                ),
            )
        )
    if kind == "nodule":
        size, lobe = _size_text(finding.size_mm, rng), _lobe(finding.location, rng)
        if uncertain:
            return f"Possible {size} {lobe} nodule; repeat PA view with nipple markers is suggested.", {
                "Lung_Lesion": -1
            }
        return f"{size} nodule in the {lobe}. Recommend chest CT for further characterization.", {"Lung_Lesion": 1}
    if kind == "atelectasis":
        where = "bibasilar" if finding.side == "bilateral" else f"{finding.side} basilar"
        return (f"Possible {where} atelectasis." if uncertain else f"{where.capitalize()} atelectasis."), {
            "Atelectasis": -1 if uncertain else 1
        }
    if kind == "edema":
        return (
            "Possible mild pulmonary edema." if uncertain else f"{finding.severity.capitalize()} pulmonary edema."
        ), {"Edema": -1 if uncertain else 1}
    raise ValueError(f"no impression for finding kind {kind!r}")


def mimic_report_text(findings_text, impression_text, view, indication, rng):
    """The full free-text report as MIMIC-CXR's files/pXX/pXXXXXXXX/sXXXXXXXX.txt lay it out."""
    exam = "CHEST (PORTABLE AP)" if view == "AP" else "CHEST (PA AND LAT)"
    technique = (
        "Portable AP view of the chest."
        if view == "AP"
        else rng.choice(("PA and lateral views of the chest.", "Chest PA and lateral."))
    )
    comparison = rng.choice(("None.", "___", "Prior CXR from ___."))
    lines = [
        "                                 FINAL REPORT",
        f" EXAMINATION:  {exam}",
        " ",
        f" INDICATION:  {indication}",
        " ",
        f" TECHNIQUE:  {technique}",
        " ",
        f" COMPARISON:  {comparison}",
        " ",
        " FINDINGS:",
        " ",
        *_wrap(findings_text),
        " ",
        " IMPRESSION:",
        " ",
        *_wrap(impression_text),
    ]
    return "\n".join(lines) + "\n"


def _wrap(text, width=78):
    return [" " + line for line in textwrap.wrap(text, width=width)]


__all__ = ["INDICATIONS", "PATHOLOGY_KINDS", "mimic_report_text", "write_report"]
