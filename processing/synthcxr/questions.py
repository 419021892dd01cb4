"""Visual question-answer pairs for SynthCXR studies, in VQA-RAD's terms.

Closed questions are answered "yes"/"no" and asked about present and absent findings alike so
the answers are balanced; open questions ask which side, where, what size, what abnormality.
Findings reported with uncertainty are not asked about: their answer would be a guess.
"""

from .anatomy import LOBE_NAMES
from .reports import PATHOLOGY_KINDS

FINDING_NAMES = {
    "cardiomegaly": "cardiomegaly",
    "pleural_effusion": "pleural effusion",
    "pneumothorax": "pneumothorax",
    "consolidation": "consolidation",
    "nodule": "nodule",
    "atelectasis": "atelectasis",
    "edema": "pulmonary edema",
}
DEVICE_NAMES = {
    "ett": "endotracheal tube",
    "ngt": "nasogastric tube",
    "central_line": "central venous catheter",
    "pacemaker": "pacemaker",
}

_PRESENCE_QUESTIONS = {
    "cardiomegaly": (
        "Is the heart enlarged?",
        "Is there cardiomegaly?",
        "Is the cardiothoracic ratio greater than 0.5?",
    ),
    "pleural_effusion": ("Is there a pleural effusion?", "Is there fluid in the pleural space?"),
    "pneumothorax": ("Is there a pneumothorax?", "Is there air in the pleural space?"),
    "consolidation": ("Is there a focal consolidation?", "Is there an airspace consolidation?"),
    "nodule": ("Is there a lung nodule?", "Is there a pulmonary nodule?"),
    "atelectasis": ("Is there atelectasis?",),
    "edema": ("Is there pulmonary edema?",),
}


def _closed(question, yes, question_type="PRES"):
    return {
        "question": question,
        "answer": "yes" if yes else "no",
        "answer_type": "CLOSED",
        "question_type": question_type,
    }


def _open(question, answer, question_type):
    return {"question": question, "answer": answer, "answer_type": "OPEN", "question_type": question_type}


def make_questions(findings, view, rng, max_questions=6):
    """Up to `max_questions` question-answer dicts (question, answer, answer_type, question_type)."""
    certain = [f for f in findings if not f.uncertain]
    hedged_kinds = {f.kind for f in findings if f.uncertain}
    present = {f.kind: f for f in certain}
    pathology = [f for f in certain if f.kind in PATHOLOGY_KINDS]
    closed, opened = [], []

    for kind, questions in _PRESENCE_QUESTIONS.items():
        if kind not in hedged_kinds:
            closed.append(_closed(rng.choice(questions), kind in present))
    for kind, name in (("pleural_effusion", "pleural effusion"), ("pneumothorax", "pneumothorax")):
        if kind in hedged_kinds:
            continue
        sides = {side for f in certain if f.kind == kind for side in f.sides}
        side = rng.choice(("left", "right"))
        closed.append(_closed(f"Is there a {side} {name}?", side in sides, "POS"))
        if sides:
            answer = "bilateral" if len(sides) == 2 else sides.pop()
            opened.append(_open(f"Which side is the {name} on?", answer, "POS"))
    for kind in ("consolidation", "nodule"):
        if kind in hedged_kinds:
            continue
        lobes = {f.location for f in certain if f.kind == kind}
        lobe = rng.choice(sorted(lobes)) if lobes and rng.random() < 0.5 else rng.choice(sorted(LOBE_NAMES))
        closed.append(_closed(f"Is there a {FINDING_NAMES[kind]} in the {LOBE_NAMES[lobe]}?", lobe in lobes, "POS"))
        if len(lobes) == 1:
            opened.append(_open(f"Where is the {FINDING_NAMES[kind]}?", LOBE_NAMES[next(iter(lobes))], "POS"))
    if "nodule" in present:
        opened.append(_open("What is the size of the nodule?", f"{present['nodule'].size_mm:.0f} mm", "SIZE"))

    devices = [f.device for f in certain if f.kind == "support_device"]
    closed.append(
        _closed(
            rng.choice(("Are there any support devices?", "Are any lines or tubes present?")), bool(devices), "PRES"
        )
    )
    device = rng.choice(sorted(DEVICE_NAMES))
    closed.append(_closed(f"Is there a {DEVICE_NAMES[device]}?", device in devices, "PRES"))
    if len(devices) == 1:
        opened.append(_open("What device is present?", DEVICE_NAMES[devices[0]], "PRES"))

    if not hedged_kinds:
        closed.append(
            _closed(rng.choice(("Is this chest x-ray normal?", "Is this a normal study?")), not pathology, "ABN")
        )
        kinds = {f.kind for f in pathology}
        if len(kinds) == 1:
            opened.append(
                _open(
                    rng.choice(("What is the abnormality?", "What abnormality is seen?")),
                    FINDING_NAMES[kinds.pop()],
                    "ABN",
                )
            )
    opened.append(_open(rng.choice(("What view is this?", "In what plane is this image taken?")), view, "PLANE"))
    opened.append(_open("What imaging modality is this?", "x-ray", "MODALITY"))
    opened.append(_open("What organ system is shown?", "chest", "ORGAN"))

    # Keep the informative questions: those about findings first, generic ones last.
    # Balance the closed answers: alternate "yes" and "no" as far as both last.
    yes = [q for q in closed if q["answer"] == "yes"]
    no = [q for q in closed if q["answer"] == "no"]
    rng.shuffle(yes)
    rng.shuffle(no)
    closed = [q for pair in zip(yes, no) for q in pair] + yes[len(no) :] + no[len(yes) :]
    generic = [q for q in opened if q["question_type"] in ("PLANE", "MODALITY", "ORGAN")]
    specific = [q for q in opened if q not in generic]
    rng.shuffle(specific)
    rng.shuffle(generic)
    n_open = min(len(specific) + len(generic), max(1, max_questions // 2))
    chosen = (specific + generic)[:n_open]
    chosen += closed[: max_questions - len(chosen)]
    rng.shuffle(chosen)
    return chosen


__all__ = ["DEVICE_NAMES", "FINDING_NAMES", "make_questions"]
