"""The laterality probe: for findings with a side, does an image match its side's prompt ensemble better than the
other side's? A model trained with a flip that does not swap "left" and "right" in the report learns sides at
chance; this is where that shows.

Which side a study's finding is on comes from its report, abbreviations expanded ("RLL", "L pleural effusion"):
the sentences that name the finding, are not negated, and name exactly one side, all the same side (bilateral and two-sided studies are left out). Only studies whose
label for the finding is 1 (present, not uncertain) count.
"""

import re

import numpy as np

from processing.clinical_text_medvl import expand_abbreviations

# Words that name each sided finding in a report sentence.
FINDING_WORDS = {
    "Pleural Effusion": ("effusion",),
    "Pneumothorax": ("pneumothorax", "ptx"),
    "Consolidation": ("consolidation",),
}
_NEGATION = re.compile(r"^\s*(no|there is no|there are no|without|negative for)\b")


def stated_side(report: str, finding: str) -> str | None:
    """"left" or "right" when every non-negated sentence of `report` that names `finding` names that one side."""
    words = FINDING_WORDS[finding]
    sides = set()
    for sentence in re.split(r"(?<=[.;\n])\s*", expand_abbreviations(report).lower()):
        tokens = set(re.findall(r"[a-z]+", sentence))
        if not tokens & set(words) or _NEGATION.match(sentence):
            continue
        named = {"left", "right"} & tokens
        if tokens & {"lingula", "lingular"}:  # a part of the left lung that reports name without a side
            named.add("left")
        if len(named) != 1 or "bilateral" in tokens or "both" in tokens:
            return None
        sides |= named
    return sides.pop() if len(sides) == 1 else None


def laterality_probe(image_embeds, left_embeds, right_embeds, reports, label_rows, findings) -> dict:
    """Accuracy of choosing the stated side by similarity, per finding and pooled.

    `left_embeds` / `right_embeds`: `(len(findings), dim)` ensemble embeddings; `label_rows`: each study's label dict.
    """
    image_embeds = np.asarray(image_embeds, dtype=np.float64)
    per_finding, counts, correct_total = {}, {}, 0
    for column, finding in enumerate(findings):
        rows, truth = [], []
        for row, (report, labels) in enumerate(zip(reports, label_rows)):
            side = stated_side(report, finding) if (labels or {}).get(finding) == 1 else None
            if side is not None:
                rows.append(row)
                truth.append(side == "left")
        if not rows:
            continue
        images = image_embeds[rows]
        says_left = images @ np.asarray(left_embeds[column], np.float64) > images @ np.asarray(right_embeds[column], np.float64)
        correct = int((says_left == np.asarray(truth)).sum())
        per_finding[finding], counts[finding] = correct / len(rows), len(rows)
        correct_total += correct
    total = sum(counts.values())
    return {
        "laterality_accuracy": correct_total / total if total else float("nan"),
        "laterality_accuracy_per_finding": per_finding,
        "laterality_studies": counts,
    }


__all__ = ["FINDING_WORDS", "stated_side", "laterality_probe"]
