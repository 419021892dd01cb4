"""Terminology tables for the clinical text normaliser: spelling variants, synonyms and the
left/right pairs used by the laterality swap.

All matching is case-insensitive on whole words; the normaliser keeps the case pattern of the
word it replaces ("Oedema" -> "Edema", "OEDEMA" -> "EDEMA").
"""

# British -> American spelling: (cue, pattern, replacement). The pattern matches only the part
# that changes, anchored at a word start or after a medical prefix, so "haem" changes in
# "haemothorax" and "hydrohaemothorax" but never inside an unrelated word. A rule runs only when
# its lowercase cue (or one of a tuple of cues) occurs in the text.
SPELLING_RULES = [
    ("haem", r"(?:\b|(?<=hydro)|(?<=pneumo)|(?<=sero))haem(?=[a-z])", "hem"),  # haemorrhage, haematoma
    ("oedem", r"\boedem(?=a|at)", "edem"),                                   # oedema, oedematous
    ("oesophag", r"\boesophag(?=[a-z])", "esophag"),                         # oesophagus, oesophageal
    ("paed", r"(?:\b|(?<=ortho)|(?<=orth))paed(?=[a-z])", "ped"),           # paediatric, orthopaedic
    ("aemi", r"(?<=[a-z])aemi(?=a|c)", "emi"),                               # anaemia, hypoxaemia, ischaemic
    ("leuc", r"\bleuc(?=o|ae|e)", "leuk"),                                   # leucocyte, leucaemia
    ("aetiolog", r"\baetiolog", "etiolog"),
    ("anaesthe", r"\banaesthe", "anesthe"),
    ("dyspnoe", r"\bdyspnoe(?=a|ic)", "dyspne"),
    ("apnoe", r"\bapnoe(?=a|ic)", "apne"),
    ("diarrhoe", r"\bdiarrhoe(?=a|al)", "diarrhe"),
    ("foet", r"\bfoet(?=al|us)", "fet"),
    ("tumour", r"\btumour", "tumor"),
    ("fibre", r"\bfibre(?=s?\b)", "fiber"),
    ("centre", r"\bcentre(?=s?\b|d\b)", "center"),
    ("metre", r"(?:\b|(?<=centi)|(?<=milli))metre", "meter"),
    ("litre", r"\blitre", "liter"),
    ("calibre", r"\bcalibre\b", "caliber"),
    ("grey", r"\bgrey\b", "gray"),
    ("manoeuvre", r"\bmanoeuvre", "maneuver"),
    (
        # Cues end in the "s" that changes: "localized" and "normal" skip the rule.
        ("localis", "visualis", "characteris", "stabilis", "hospitalis", "immobilis", "organis", "recognis",
         "minimis", "catheteris", "emphasis", "normalis", "generalis"),
        r"(?:(?<=\blocali)|(?<=\bvisuali)|(?<=\bcharacteri)|(?<=\bstabili)|(?<=\bhospitali)|"
        r"(?<=\bimmobili)|(?<=\borgani)|(?<=\brecogni)|(?<=\bminimi)|(?<=\bcatheteri)|"
        r"(?<=\bemphasi)|(?<=\bnormali)|(?<=\bgenerali))s(?=(?:e|ed|es|ing|ation|ations)\b)",
        "z",
    ),
]

# Synonyms -> one preferred term. Keys are regexes matched case-insensitively from a word start
# ("\s+" tolerates any spacing and line breaks), with no end anchor so that plurals carry over
# ("lung nodules" -> "pulmonary nodules"); applied in the order listed.
SYNONYMS = {
    r"pleural\s+fluid\s+collection": "pleural effusion",
    r"pleural\s+fluid": "pleural effusion",
    r"fluid\s+in\s+the\s+pleural\s+space": "pleural effusion",
    r"cardiac\s+enlargement": "cardiomegaly",
    r"enlarged\s+heart": "cardiomegaly",
    r"enlargement\s+of\s+the\s+heart": "cardiomegaly",
    r"heart\s+enlargement": "cardiomegaly",
    r"ground[\s-]?glass\s+opacities": "ground-glass opacities",
    r"ground[\s-]?glass\s+(?:opacity|opacification|attenuation)": "ground-glass opacity",
    r"ground\s+glass": "ground-glass",
    r"air[\s-]space": "airspace",
    r"air\s+fluid\s+level": "air-fluid level",
    r"subcutaneous\s+air": "subcutaneous emphysema",
    r"surgical\s+emphysema": "subcutaneous emphysema",
    r"lung\s+nodule": "pulmonary nodule",
    r"lung\s+mass": "pulmonary mass",
    r"lung\s+edema": "pulmonary edema",
    r"fluid\s+overload": "volume overload",
    r"(?<!lymph\s)(?<!lymph)\badenopathy": "lymphadenopathy",
    r"cardio[\s-]mediastinal": "cardiomediastinal",
    r"hemi[\s-]diaphragm": "hemidiaphragm",
    r"hemi[\s-]thorax": "hemithorax",
    r"peri[\s-]hilar": "perihilar",
    r"retro[\s-]cardiac": "retrocardiac",
    r"sub[\s-]segmental": "subsegmental",
    r"para[\s-]tracheal": "paratracheal",
    r"chest\s+x[\s-]?ray": "chest radiograph",
    r"chest\s+film": "chest radiograph",
    r"x[\s-]?ray": "radiograph",
    r"naso[\s-]gastric": "nasogastric",
    r"endo[\s-]tracheal": "endotracheal",
    r"pneumothoraxes": "pneumothoraces",
    r"atelectatic\s+changes?\b": "atelectasis",
}

# Horizontal flip: each form maps to its mirror. Words not listed (e.g. "bilateral", "midline")
# are unchanged. Cardiac chambers and coronary arteries keep their names: "left ventricle" is an
# identity, not a position on the image (see `LATERALITY_FIXED`).
LATERALITY_WORDS = {
    "left": "right",
    "right": "left",
    "leftward": "rightward",
    "rightward": "leftward",
    "leftwards": "rightwards",
    "rightwards": "leftwards",
    "levoscoliosis": "dextroscoliosis",
    "dextroscoliosis": "levoscoliosis",
    "levoconvex": "dextroconvex",
    "dextroconvex": "levoconvex",
    "levocurvature": "dextrocurvature",
    "dextrocurvature": "levocurvature",
}
LATERALITY_ABBREVIATIONS = {
    "LLL": "RLL", "RLL": "LLL",
    "LUL": "RUL", "RUL": "LUL",
    "LIJ": "RIJ", "RIJ": "LIJ",
    "LUQ": "RUQ", "RUQ": "LUQ",
    "LLQ": "RLQ", "RLQ": "LLQ",
    "LUE": "RUE", "RUE": "LUE",
    "LLE": "RLE", "RLE": "LLE",
    "LMB": "RMB", "RMB": "LMB",
}
# The right middle lobe has no left lobe of its own; its mirror is the lingula, the left upper
# lobe's segment in the same place. "RML" and "right middle lobe" map to "lingula", and
# "lingula"/"lingular" map back to "right middle lobe".
MIDDLE_LOBE_TO_LINGULA = r"(?:right\s+middle\s+lobe|RML)"
LINGULA_TO_MIDDLE_LOBE = r"(?:lingula|lingular)"
# Left/right followed by these keep their side under a flip (names of structures, not places).
LATERALITY_FIXED = (
    r"(?:-?\s*sided\s+heart\s+failure|\s+(?:atri|ventric|coronary|anterior\s+descending|"
    r"circumflex|main\s+coronary|bundle\s+branch|heart\s+failure|heart\s+strain))"
)

__all__ = [
    "LATERALITY_ABBREVIATIONS",
    "LATERALITY_FIXED",
    "LATERALITY_WORDS",
    "LINGULA_TO_MIDDLE_LOBE",
    "MIDDLE_LOBE_TO_LINGULA",
    "SPELLING_RULES",
    "SYNONYMS",
]
