"""Curated radiology and clinical abbreviations for the clinical text normaliser.

Three tables:

- `ABBREVIATIONS`: unambiguous upper- or mixed-case abbreviations, matched case-sensitively as
  whole tokens ("CHF" expands, "chf" inside a word never does). A trailing lowercase "s" makes a
  plural ("PICCs" -> "peripherally inserted central catheters"; irregular plurals in `PLURALS`).
- `SHORTHAND`: lowercase clinical shorthand ("s/p", "h/o", "pt"), matched in any case.
- `CONTEXTUAL`: abbreviations whose sense depends on the words around them ("PA view" is the
  posteroanterior projection, "enlarged PA" the pulmonary artery; "L base" is the left base).
  Each sense is tried in order (a sense with expansion None keeps the abbreviation); when none matches, the abbreviation is left as written (an
  ambiguous abbreviation is never guessed).

Expansions are written in lower case except proper names; the normaliser adapts the case to the
surrounding text.
"""

ABBREVIATIONS = {
    # projections, modalities, studies
    "CXR": "chest radiograph",
    "KUB": "kidneys, ureters and bladder radiograph",
    "CT": "computed tomography",
    "CTA": "computed tomography angiography",
    "CTPA": "computed tomography pulmonary angiography",
    "HRCT": "high-resolution computed tomography",
    "MRI": "magnetic resonance imaging",
    "MRA": "magnetic resonance angiography",
    "US": "ultrasound",
    "PET": "positron emission tomography",
    "V/Q": "ventilation-perfusion",
    "VQ": "ventilation-perfusion",
    "EKG": "electrocardiogram",
    "ECG": "electrocardiogram",
    "TTE": "transthoracic echocardiogram",
    "TEE": "transesophageal echocardiogram",
    "ABG": "arterial blood gas",
    "PFT": "pulmonary function test",
    # lobes, zones and regions
    "RUL": "right upper lobe",
    "RML": "right middle lobe",
    "RLL": "right lower lobe",
    "LUL": "left upper lobe",
    "LLL": "left lower lobe",
    "RUQ": "right upper quadrant",
    "RLQ": "right lower quadrant",
    "LUQ": "left upper quadrant",
    "LLQ": "left lower quadrant",
    "RUE": "right upper extremity",
    "LUE": "left upper extremity",
    "RLE": "right lower extremity",
    "LLE": "left lower extremity",
    "BLE": "bilateral lower extremities",
    "RMB": "right main bronchus",
    "LMB": "left main bronchus",
    "RIJ": "right internal jugular",
    "LIJ": "left internal jugular",
    "IJ": "internal jugular",
    "SVC": "superior vena cava",
    "IVC": "inferior vena cava",
    "MPA": "main pulmonary artery",
    "RV": "right ventricle",
    "LV": "left ventricle",
    "LA": "left atrium",
    "GEJ": "gastroesophageal junction",
    "GE": "gastroesophageal",
    "AC": "acromioclavicular",
    "CTJ": "cervicothoracic junction",
    "TLJ": "thoracolumbar junction",
    # lines, tubes and devices
    "ETT": "endotracheal tube",
    "ET": "endotracheal",
    "NGT": "nasogastric tube",
    "NG": "nasogastric",
    "OGT": "orogastric tube",
    "OG": "orogastric",
    "NJ": "nasojejunal",
    "PICC": "peripherally inserted central catheter",
    "CVC": "central venous catheter",
    "CVL": "central venous line",
    "ICD": "implantable cardioverter-defibrillator",
    "AICD": "automatic implantable cardioverter-defibrillator",
    "PPM": "permanent pacemaker",
    "IABP": "intra-aortic balloon pump",
    "LVAD": "left ventricular assist device",
    "VAD": "ventricular assist device",
    "ECMO": "extracorporeal membrane oxygenation",
    "PEG": "percutaneous endoscopic gastrostomy",
    "VP": "ventriculoperitoneal",
    "BiPAP": "bilevel positive airway pressure",
    "BIPAP": "bilevel positive airway pressure",
    "CPAP": "continuous positive airway pressure",
    "PEEP": "positive end-expiratory pressure",
    "NRB": "non-rebreather mask",
    "NC": "nasal cannula",
    # procedures and surgery
    "CABG": "coronary artery bypass graft",
    "AVR": "aortic valve replacement",
    "MVR": "mitral valve replacement",
    "TAVR": "transcatheter aortic valve replacement",
    "TAVI": "transcatheter aortic valve implantation",
    "PCI": "percutaneous coronary intervention",
    "PTCA": "percutaneous transluminal coronary angioplasty",
    "VATS": "video-assisted thoracoscopic surgery",
    "ORIF": "open reduction and internal fixation",
    "CPR": "cardiopulmonary resuscitation",
    "XRT": "radiation therapy",
    "HD": "hemodialysis",
    # findings and diagnoses
    "PTX": "pneumothorax",
    "HTX": "hemothorax",
    "PNA": "pneumonia",
    "CHF": "congestive heart failure",
    "COPD": "chronic obstructive pulmonary disease",
    "ILD": "interstitial lung disease",
    "IPF": "idiopathic pulmonary fibrosis",
    "UIP": "usual interstitial pneumonia",
    "NSIP": "nonspecific interstitial pneumonia",
    "COP": "cryptogenic organizing pneumonia",
    "BOOP": "bronchiolitis obliterans organizing pneumonia",
    "ARDS": "acute respiratory distress syndrome",
    "PE": "pulmonary embolism",
    "DVT": "deep vein thrombosis",
    "VTE": "venous thromboembolism",
    "GGO": "ground-glass opacity",
    "AAA": "abdominal aortic aneurysm",
    "AVM": "arteriovenous malformation",
    "CAD": "coronary artery disease",
    "MI": "myocardial infarction",
    "STEMI": "ST-elevation myocardial infarction",
    "NSTEMI": "non-ST-elevation myocardial infarction",
    "ACS": "acute coronary syndrome",
    "HTN": "hypertension",
    "PAH": "pulmonary arterial hypertension",
    "HLD": "hyperlipidemia",
    "DM": "diabetes mellitus",
    "CKD": "chronic kidney disease",
    "ESRD": "end-stage renal disease",
    "AKI": "acute kidney injury",
    "CVA": "cerebrovascular accident",
    "TIA": "transient ischemic attack",
    "AFib": "atrial fibrillation",
    "LVH": "left ventricular hypertrophy",
    "RVH": "right ventricular hypertrophy",
    "JVD": "jugular venous distension",
    "ASD": "atrial septal defect",
    "VSD": "ventricular septal defect",
    "PDA": "patent ductus arteriosus",
    "PFO": "patent foramen ovale",
    "TB": "tuberculosis",
    "MRSA": "methicillin-resistant Staphylococcus aureus",
    "PJP": "Pneumocystis jirovecii pneumonia",
    "RSV": "respiratory syncytial virus",
    "URI": "upper respiratory infection",
    "LRTI": "lower respiratory tract infection",
    "UTI": "urinary tract infection",
    "VAP": "ventilator-associated pneumonia",
    "HCAP": "healthcare-associated pneumonia",
    "CAP": "community-acquired pneumonia",
    "SBO": "small bowel obstruction",
    "NSCLC": "non-small cell lung cancer",
    "SCLC": "small cell lung cancer",
    "DJD": "degenerative joint disease",
    "DISH": "diffuse idiopathic skeletal hyperostosis",
    "OSA": "obstructive sleep apnea",
    "GERD": "gastroesophageal reflux disease",
    "FB": "foreign body",
    "LN": "lymph node",
    "EF": "ejection fraction",
    "LVEF": "left ventricular ejection fraction",
    # history, symptoms and care settings
    "SOB": "shortness of breath",
    "DOE": "dyspnea on exertion",
    "PND": "paroxysmal nocturnal dyspnea",
    "AMS": "altered mental status",
    "LOC": "loss of consciousness",
    "MVC": "motor vehicle collision",
    "MVA": "motor vehicle accident",
    "GSW": "gunshot wound",
    "IVDU": "intravenous drug use",
    "ETOH": "alcohol",
    "EtOH": "alcohol",
    "PMH": "past medical history",
    "HPI": "history of present illness",
    "NAD": "no acute disease",
    "WNL": "within normal limits",
    "ICU": "intensive care unit",
    "MICU": "medical intensive care unit",
    "SICU": "surgical intensive care unit",
    "CCU": "cardiac care unit",
    "ED": "emergency department",
    "ER": "emergency room",
    "OSH": "outside hospital",
    "SNF": "skilled nursing facility",
    "EMS": "emergency medical services",
    "PO": "by mouth",
    "NPO": "nothing by mouth",
    "PRN": "as needed",
    "BID": "twice daily",
    "TID": "three times daily",
    "O2": "oxygen",
    "BNP": "brain natriuretic peptide",
    "WBC": "white blood cell count",
    "Hgb": "hemoglobin",
    "Hct": "hematocrit",
    "INR": "international normalized ratio",
    "BP": "blood pressure",
    "HR": "heart rate",
    "RR": "respiratory rate",
}

# Plurals that are not the expansion plus "s".
PLURALS = {
    "PTX": "pneumothoraces",
    "HTX": "hemothoraces",
    "MPA": "main pulmonary arteries",
    "LN": "lymph nodes",
    "MI": "myocardial infarctions",
    "GGO": "ground-glass opacities",
    "AVM": "arteriovenous malformations",
}

SHORTHAND = {
    "s/p": "status post",
    "h/o": "history of",
    "c/o": "complains of",
    "c/w": "consistent with",
    "r/o": "rule out",
    "w/o": "without",
    "w/": "with",
    "b/l": "bilateral",
    "bilat": "bilateral",
    "f/u": "follow-up",
    "w/u": "workup",
    "d/t": "due to",
    "r/t": "related to",
    "a/w": "associated with",
    "n/v": "nausea and vomiting",
    "s/s": "signs and symptoms",
    "y/o": "year-old",
    "y.o.": "year-old",
    "yo": "year-old",
    "hx": "history",
    "dx": "diagnosis",
    "ddx": "differential diagnosis",
    "tx": "treatment",
    "sx": "symptoms",
    "fx": "fracture",
    "fxs": "fractures",
    "abx": "antibiotics",
    "pt": "patient",
    "pts": "patients",
    "approx": "approximately",
    "lat": "lateral",
    "prox": "proximal",
    "eval": "evaluation",
    "nl": "normal",
    "neg": "negative",
    "mets": "metastases",
    "chemo": "chemotherapy",
    "afib": "atrial fibrillation",
    "a-fib": "atrial fibrillation",
    "cath": "catheter",
}

# Words that make a standalone "L"/"R" (or "PA", "CP", ...) read as anatomy: shared with the
# laterality swap so that expansion and flip agree on what counts as a side.
LATERALITY_CONTEXT = (
    r"(?:-?\s*sided|upper|lower|middle|mid|base|bases|basal|basilar|apex|apical|lung|lungs|"
    r"hemithorax|hemidiaphragm|pleural|effusion|pneumothorax|costophrenic|cp|chest|side|hilum|"
    r"hilar|perihilar|heart|lobe|ij|internal|subclavian|picc|clavicle|shoulder|rib|ribs|breast|"
    r"axilla|axillary|mainstem|main|arm|retrocardiac|paratracheal|paramediastinal|mediastinal|"
    r"neck|humerus|scapula|diaphragm|zone|field)\b"
)

# Sense rules: (expansion, follows, precedes, nearby). `follows` is a regex matched right after
# the abbreviation, `precedes` one matched right before it (anchored at its end), `nearby` a set
# of lowercase words within three words either side. The first sense with a matching cue wins.
_PROJECTION_AFTER = (
    r"\s*(?:(?:and|&|/|\+)\s*(?:lat|lateral|ap|pa)\b|(?:view|views|projection|projections|"
    r"radiograph|radiographs|film|films|chest|cxr|image|images|upright|erect|exam|only)\b)"
)
_PA_ARTERY_CUES = {
    "enlarged", "enlargement", "prominent", "prominence", "dilated", "dilatation", "dilation",
    "pressure", "pressures", "hypertension", "catheter", "swan", "swan-ganz", "trunk", "main",
    "diameter", "segmental", "engorgement", "engorged", "aneurysm", "embolus", "emboli",
    "enlarging", "caliber", "calibre", "arteries",
}
_PROJECTION_CUES = {"view", "views", "frontal", "lateral", "lat", "projection", "portable", "upright", "semi-upright", "radiograph", "radiographs", "film"}

CONTEXTUAL = {
    "PA": [
        ("pulmonary artery", None, r"\b(?:right|left|main|proximal|distal|descending)\s*$", None),
        ("posteroanterior", _PROJECTION_AFTER, r"(?:\b(?:upright|erect|frontal|standing|single)\s*|(?:ap|lat|lateral)\s*(?:and|&|/)\s*)$", None),
        ("pulmonary artery", None, None, _PA_ARTERY_CUES),
        ("posteroanterior", None, None, _PROJECTION_CUES),
    ],
    "AP": [
        ("aortopulmonary", r"\s*window\b", None, None),
        ("anteroposterior", r"", None, None),
    ],
    "CP": [
        ("costophrenic", r"\s*angles?\b", None, None),
        ("chest pain", r"", None, None),
    ],
    "RA": [
        ("room air", None, r"\b(?:on|at|in)\s*$", None),
        ("room air", r"\s*(?:sat|sats|saturation|o2)\b", None, None),
        ("right atrium", r"", None, None),
    ],
    "L": [("left", r"\s*" + LATERALITY_CONTEXT, None, None)],
    "R": [("right", r"\s*" + LATERALITY_CONTEXT, None, None)],
    "Lt": [("left", r"\.?\s*" + LATERALITY_CONTEXT, None, None)],
    "Rt": [("right", r"\.?\s*" + LATERALITY_CONTEXT, None, None)],
    "LT": [("left", r"\.?\s*" + LATERALITY_CONTEXT, None, None)],
    "RT": [("right", r"\.?\s*" + LATERALITY_CONTEXT, None, None)],
    # Roman numeral "IV" (stage IV, grade IV) is not intravenous: None keeps it as written.
    "IV": [
        (None, None, r"\b(?:stage|grade|type|class|level|phase|cn)\s*$", None),
        ("intravenous", r"", None, None),
    ],
}

__all__ = ["ABBREVIATIONS", "CONTEXTUAL", "LATERALITY_CONTEXT", "PLURALS", "SHORTHAND"]
