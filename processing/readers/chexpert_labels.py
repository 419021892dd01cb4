"""CheXpert-style label cells (MIMIC-CXR's and CheXpert's CSVs): 1.0 / 0.0 / -1.0 / blank.

Rows carry `labels`: a dict over `CHEXPERT_LABELS` with 1 (positive), 0 (negative), -1
(uncertain) or None (blank: not mentioned). The uncertainty policies of the CheXpert paper map -1:
"keep" leaves it, "ones" (U-Ones) makes it 1, "zeros" (U-Zeros) makes it 0, "ignore" (U-Ignore)
makes it None so that a loss masks it out.
"""

import datasets

from ..chexpert import CHEXPERT_LABELS

UNCERTAINTY_POLICIES = {"keep": -1, "ones": 1, "zeros": 0, "ignore": None}
_CELL_VALUES = {"1": 1, "1.0": 1, "0": 0, "0.0": 0, "-1": -1, "-1.0": -1, "": None}

LABELS_FEATURE = {name: datasets.Value("int8") for name in CHEXPERT_LABELS}


def check_uncertainty_policy(uncertainty: str) -> None:
    if uncertainty not in UNCERTAINTY_POLICIES:
        raise ValueError(f"uncertainty must be one of {sorted(UNCERTAINTY_POLICIES)}, got {uncertainty!r}")


def parse_label_cells(csv_row: dict, uncertainty: str = "keep") -> dict:
    """The 14 labels of one CSV row; raises ValueError naming the column for a value outside the set."""
    labels = {}
    for name in CHEXPERT_LABELS:
        if name not in csv_row:
            raise ValueError(f"missing label column {name!r}")
        cell = (csv_row[name] or "").strip()
        if cell not in _CELL_VALUES:
            raise ValueError(f"label {name!r} is {cell!r}, outside {{1, 0, -1, blank}}")
        value = _CELL_VALUES[cell]
        labels[name] = UNCERTAINTY_POLICIES[uncertainty] if value == -1 else value
    return labels


__all__ = ["LABELS_FEATURE", "UNCERTAINTY_POLICIES", "check_uncertainty_policy", "parse_label_cells"]
