"""Clinical evaluation of a model's scores: input checks, the label-order check, per-label confusion matrices,
calibration (expected calibration error over reliability bins) and every metric split by patient subgroup with the
largest gap between groups.

Scores come in two forms: `scores` rank (logits; the AUC uses them, any monotone score gives the same AUC) and
`probabilities` in [0, 1] (calibration and the confusion matrices use them). Targets are (N, L) with 1, 0 or -100
(unknown, left out of that label only).
"""

import warnings

import numpy as np

from train.finetune_eval import auroc, summary

UNKNOWN_TARGET = -100
# Age bands (years, lower bound inclusive) as clinical papers report them.
AGE_BANDS = ((0, "<18"), (18, "18-39"), (40, "40-59"), (60, "60-79"), (80, "80+"))
# Metadata column -> the subgroup attribute it defines.
SUBGROUP_ATTRIBUTES = {"sex": "sex", "age": "age_band", "view": "view", "site": "site"}
SEX_NAMES = {"f": "female", "female": "female", "m": "male", "male": "male"}
_METRIC_OWN_WARNING = r"medvl_auroc: AUC-ROC's 95% interval lies entirely below 0.5"


class LabelOrderWarning(UserWarning):
    """A label's AUC lies below 0.5 beyond its 95% interval: most often a swapped or mis-ordered label column."""


def check_predictions(scores, targets, label_names):
    """(scores, targets) as float64 (N, L) arrays; a clear ValueError for an empty list, mismatched lengths or a
    column count that is not the number of labels."""
    if scores is None or len(scores) == 0:
        raise ValueError("empty prediction list: nothing to evaluate (did the data split select no rows?)")
    if targets is None or len(targets) != len(scores):
        raise ValueError(f"mismatched lengths: {len(scores)} predictions but {0 if targets is None else len(targets)} "
                         "targets")
    scores, targets = np.asarray(scores, dtype=np.float64), np.asarray(targets, dtype=np.float64)
    scores, targets = (array[:, None] if array.ndim == 1 else array for array in (scores, targets))
    label_names = list(label_names)
    for name, array in (("predictions", scores), ("targets", targets)):
        if array.ndim != 2 or array.shape[1] != len(label_names):
            raise ValueError(f"{name} have shape {array.shape}, not one column per label of {label_names}")
    return scores, targets


def select_labels(requested, available, source: str) -> list:
    """`requested` (default: all of `available`, in its order) checked against `available`; `source` names what
    offers the labels in the error (e.g. "the model's head")."""
    available = list(available)
    if not requested:
        return available
    unknown = [name for name in requested if name not in available]
    if unknown:
        raise ValueError(f"unknown label name(s) {unknown}: {source} has {available}")
    repeated = sorted({name for name in requested if list(requested).count(name) > 1})
    if repeated:
        raise ValueError(f"label name(s) {repeated} given more than once")
    return list(requested)


def evaluate_auroc(scores, targets, label_names, bootstrap_samples=1000, seed=0) -> dict:
    """The AUC-ROC module's summary (per label and macro, bootstrap 95% intervals) plus the label-order check:
    `labels_below_chance` {label: {auc, ci}} for labels whose whole interval lies below 0.5, each also named in a
    `LabelOrderWarning` (the metric module's own, shorter warning is replaced by it)."""
    scores, targets = check_predictions(scores, targets, label_names)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_METRIC_OWN_WARNING)
        result = summary(auroc(scores, targets, label_names, bootstrap_samples=bootstrap_samples, seed=seed))
    below = {
        name: {"auc": result["auroc_per_label"][name], "ci": ci}
        for name, ci in result["auroc_per_label_ci"].items() if ci[1] < 0.5
    }
    result["labels_below_chance"] = below
    if below:
        named = ", ".join(f"{name} {v['auc']:.3f} (95% CI {v['ci'][0]:.3f}-{v['ci'][1]:.3f})"
                          for name, v in below.items())
        warnings.warn(LabelOrderWarning(
            f"AUC below 0.5 beyond its 95% interval for {list(below)}: {named}. A model ranking negatives above "
            "positives with confidence usually means a swapped or mis-ordered label column (check the label order "
            "of the data against the model's id2label)."
        ), stacklevel=2)
    return result


def _known(targets):
    return ~(np.isnan(targets) | (targets == UNKNOWN_TARGET))


def confusion_matrices(probabilities, targets, label_names, threshold=0.5) -> dict:
    """Per label: true/false positives/negatives at `probability >= threshold`, sensitivity and specificity (None
    when undefined), over the known targets."""
    probabilities, targets = check_predictions(probabilities, targets, label_names)
    known = _known(targets)
    matrices = {}
    for column, name in enumerate(label_names):
        truth = targets[known[:, column], column] == 1
        predicted = probabilities[known[:, column], column] >= threshold
        tp, fn = int((truth & predicted).sum()), int((truth & ~predicted).sum())
        fp, tn = int((~truth & predicted).sum()), int((~truth & ~predicted).sum())
        matrices[name] = {
            "tp": tp, "fn": fn, "fp": fp, "tn": tn,
            "sensitivity": tp / (tp + fn) if tp + fn else None,
            "specificity": tn / (tn + fp) if tn + fp else None,
        }
    return {"threshold": threshold, "per_label": matrices}


def _bins(probabilities, truth, n_bins) -> tuple[float, list]:
    """(ECE, bins) of one set of (probability, 0/1 outcome) pairs over `n_bins` equal-width bins of [0, 1]."""
    index = np.minimum((probabilities * n_bins).astype(int), n_bins - 1)
    bins, ece = [], 0.0
    for b in range(n_bins):
        inside = index == b
        count = int(inside.sum())
        record = {"low": b / n_bins, "high": (b + 1) / n_bins, "count": count,
                  "mean_probability": None, "positive_rate": None}
        if count:
            record["mean_probability"] = float(probabilities[inside].mean())
            record["positive_rate"] = float(truth[inside].mean())
            ece += count / len(probabilities) * abs(record["positive_rate"] - record["mean_probability"])
        bins.append(record)
    return float(ece), bins


def calibration(probabilities, targets, label_names, n_bins=10) -> dict:
    """Expected calibration error: over `n_bins` equal-width bins of the predicted probability of a positive,
    ECE = sum over bins of (entries in the bin / all entries) x |observed positive rate - mean probability|.
    `ece` pools every known (study, label) entry; `ece_per_label` takes each label alone; `bins` (the pooled
    reliability diagram) hold count, mean probability and positive rate."""
    if int(n_bins) != n_bins or n_bins < 1:
        raise ValueError(f"calibration bins must be a whole number >= 1, got {n_bins}")
    probabilities, targets = check_predictions(probabilities, targets, label_names)
    if ((probabilities < 0) | (probabilities > 1)).any() or np.isnan(probabilities).any():
        raise ValueError("calibration needs probabilities in [0, 1] (apply a sigmoid to logits first)")
    known = _known(targets)
    if not known.any():
        return {"ece": float("nan"), "ece_per_label": {}, "bins": [], "n_bins": int(n_bins), "entries": 0}
    ece, bins = _bins(probabilities[known], targets[known] == 1, int(n_bins))
    per_label = {
        name: _bins(probabilities[known[:, c], c], targets[known[:, c], c] == 1, int(n_bins))[0]
        for c, name in enumerate(label_names) if known[:, c].any()
    }
    return {"ece": ece, "ece_per_label": per_label, "bins": bins, "n_bins": int(n_bins), "entries": int(known.sum())}


def age_band(age):
    if age is None or (isinstance(age, float) and np.isnan(age)) or age < 0:
        return None
    return [name for lower, name in AGE_BANDS if age >= lower][-1]


def _group_name(column: str, value):
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if column == "age":
        return age_band(value)
    if column == "sex":
        return SEX_NAMES.get(str(value).strip().lower())  # CheXpert's "Unknown" counts as missing
    return str(value).strip()


def subgroup_assignments(metadata: dict) -> dict:
    """{attribute: one group name (or None: missing) per study} from the metadata columns present (`sex`, `age`
    as `age_band`, `view`, `site`); columns of other names are ignored."""
    return {
        SUBGROUP_ATTRIBUTES[column]: [_group_name(column, value) for value in values]
        for column, values in metadata.items() if column in SUBGROUP_ATTRIBUTES
    }


def _both_classes(targets) -> np.ndarray:
    known = _known(targets)
    return ((targets == 1) & known).any(axis=0) & ((targets == 0) & known).any(axis=0)


def subgroup_metrics(scores, probabilities, targets, label_names, assignments: dict, bootstrap_samples=200, seed=0,
                     n_bins=10, min_group_size=20) -> dict:
    """Every metric per subgroup: {attribute: {"groups": {group: {count, positives, auroc_macro, auroc_macro_ci,
    auroc_per_label, ece}}, "missing": studies without a value, "compared_labels": ..., "gaps": ...}}.

    Groups of one attribute are compared on the same labels: the macro AUC of each group averages the labels with
    both classes in every group of at least `min_group_size` studies (smaller groups are reported, not compared).
    `gaps` holds, for `auroc_macro` and `ece`, the best and worst compared group and their difference."""
    scores, targets = check_predictions(scores, targets, label_names)
    probabilities, _ = check_predictions(probabilities, targets, label_names)
    results = {}
    for attribute, groups in assignments.items():
        if len(groups) != len(scores):
            raise ValueError(f"subgroup {attribute!r}: {len(groups)} values for {len(scores)} studies")
        names = sorted({group for group in groups if group is not None})
        rows_of = {name: np.array([i for i, group in enumerate(groups) if group == name]) for name in names}
        compared = [name for name in names if len(rows_of[name]) >= min_group_size]
        common = np.ones(len(label_names), bool)
        for name in compared:
            common &= _both_classes(targets[rows_of[name]])
        columns = np.flatnonzero(common)
        common_labels = [label_names[c] for c in columns]
        record = {"groups": {}, "missing": sum(group is None for group in groups), "compared_groups": compared,
                  "compared_labels": common_labels, "min_group_size": min_group_size}
        for name in names:
            rows = rows_of[name]
            group = {"count": int(len(rows)),
                     "positives": {label: int((targets[rows, c] == 1).sum()) for c, label in enumerate(label_names)},
                     "ece": calibration(probabilities[rows], targets[rows], label_names, n_bins)["ece"]}
            if len(columns):
                with warnings.catch_warnings():  # small groups: the label-order check is the whole set's
                    warnings.filterwarnings("ignore", message=_METRIC_OWN_WARNING)
                    result = auroc(scores[rows][:, columns], targets[rows][:, columns], common_labels,
                                   bootstrap_samples=bootstrap_samples, seed=seed)
                group.update(auroc_macro=result["auroc_macro"], auroc_macro_ci=list(result["auroc_macro_ci"]),
                             auroc_per_label=result["auroc_per_label"])
            record["groups"][name] = group
        record["gaps"] = {metric: _gap(record["groups"], compared, metric) for metric in ("auroc_macro", "ece")}
        results[attribute] = record
    return results


def _gap(groups: dict, compared: list, metric: str):
    values = {name: groups[name].get(metric) for name in compared}
    values = {name: value for name, value in values.items() if value is not None and not np.isnan(value)}
    if len(values) < 2:
        return None
    higher_is_better = metric != "ece"
    ranked = sorted(values, key=values.get, reverse=higher_is_better)
    best, worst = ranked[0], ranked[-1]
    gap = {"metric": metric, "best": best, "worst": worst, "best_value": values[best], "worst_value": values[worst],
           "gap": abs(values[best] - values[worst])}
    if metric == "auroc_macro":
        low_best, high_worst = groups[best]["auroc_macro_ci"][0], groups[worst]["auroc_macro_ci"][1]
        gap["intervals_overlap"] = None if np.isnan(low_best) or np.isnan(high_worst) else bool(high_worst >= low_best)
    return gap


def largest_gap(subgroups: dict, metric="auroc_macro"):
    """The attribute whose compared groups differ most in `metric` (with that gap), or None."""
    gaps = [dict(record["gaps"][metric], attribute=attribute)
            for attribute, record in subgroups.items() if record["gaps"].get(metric)]
    return max(gaps, key=lambda gap: gap["gap"]) if gaps else None


def describe_gap(gap) -> str:
    if gap is None:
        return "no subgroup attribute has two groups large enough to compare"
    unit = "macro AUC" if gap["metric"] == "auroc_macro" else gap["metric"].upper()
    text = (f"largest subgroup gap: {gap['attribute']} {unit} {gap['best']} {gap['best_value']:.3f} vs "
            f"{gap['worst']} {gap['worst_value']:.3f} (gap {gap['gap']:.3f}")
    if gap.get("intervals_overlap") is not None:
        text += ", 95% intervals " + ("overlap" if gap["intervals_overlap"] else "do NOT overlap")
    return text + ")"


__all__ = [
    "AGE_BANDS",
    "LabelOrderWarning",
    "age_band",
    "calibration",
    "check_predictions",
    "confusion_matrices",
    "describe_gap",
    "evaluate_auroc",
    "largest_gap",
    "select_labels",
    "subgroup_assignments",
    "subgroup_metrics",
]
