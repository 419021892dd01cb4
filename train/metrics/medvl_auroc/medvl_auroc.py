"""Multi-label AUC-ROC with percentile-bootstrap 95% intervals, as an `evaluate` module loadable by path."""

import warnings

import datasets
import evaluate
import numpy as np
from sklearn.metrics import roc_auc_score

from train.metrics.bootstrap import check_samples, interval, resamples

_DESCRIPTION = """
AUC-ROC per label (scikit-learn's `roc_auc_score`) and its macro average over the labels that have both
classes, for multi-label findings classification such as CheXpert's 14 labels; one binary column works
too. Entries whose target is unknown (-100 or NaN, e.g. uncertain or blank CheXpert labels mapped to
-100) are left out of that label only, never counted as negatives.

95% intervals are percentile bootstrap intervals: the rows (studies) are resampled with replacement
`bootstrap_samples` times, all labels from the same resample, so the macro interval reflects the
labels' correlation. A resample in which a label lacks one class has no AUC for it: it is skipped for
that label (and for the macro average if the label is averaged) and counted in `bootstrap_skipped`
(`bootstrap_skipped_macro`); many skips mean the interval rests on fewer resamples than asked for.
The intervals cost one `roc_auc_score` call per resample and label (1,000 resamples of 14 labels: tens
of seconds on a small CPU); `bootstrap_samples=0` skips them.

A label whose whole interval lies below 0.5 ranks the negatives above the positives with confidence,
which is more often a swapped or mis-ordered label column than a real model: a warning names it
(only when intervals are computed).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: scores, one row per study: a list of L floats (one per label), or one float per study
        for a single binary column. Higher means more likely positive.
    references: targets of the same shape: 1 positive, 0 negative, -100 or NaN unknown.
    label_names: the L column names (default "label_0", "label_1", ...).
    macro_labels: names of the labels averaged into the macro AUC (default all); those without both
        classes are left out of the average.
    bootstrap_samples: resamples for the intervals (default 1000; 0 skips them).
    seed: seed of the resampling (default 0); the same seed gives the same intervals.
Returns:
    auroc_macro: mean AUC over `labels_in_macro` (NaN when none has both classes),
    auroc_macro_ci: (low, high) 95% interval of the macro AUC,
    auroc_per_label: {label: AUC} for the labels with both classes,
    auroc_per_label_ci: {label: (low, high)},
    labels_in_macro: the labels averaged,
    labels_without_both_classes: labels with no AUC (a single class among the known entries),
    bootstrap_skipped: {label: resamples skipped},
    bootstrap_skipped_macro: resamples skipped for the macro interval.
Examples:
    >>> from train.metrics import load_metric
    >>> auroc = load_metric("medvl_auroc")
    >>> result = auroc.compute(predictions=[[0.9, 0.2], [0.1, 0.8], [0.7, 0.6], [0.2, 0.1]],
    ...                        references=[[1, 0], [0, 1], [1, -100], [0, 1]], label_names=["Edema", "Effusion"])
    >>> result["auroc_per_label"]
    {'Edema': 1.0, 'Effusion': 0.5}
"""

_CITATION = """
@article{pedregosa2011sklearn,
  title = {Scikit-learn: Machine Learning in {P}ython},
  author = {Pedregosa, F. and Varoquaux, G. and Gramfort, A. and others},
  journal = {Journal of Machine Learning Research},
  volume = {12},
  pages = {2825--2830},
  year = {2011}
}
@book{efron1993bootstrap,
  title = {An Introduction to the Bootstrap},
  author = {Efron, Bradley and Tibshirani, Robert J.},
  publisher = {Chapman and Hall/CRC},
  year = {1993}
}
"""

UNKNOWN_TARGET = -100


def _as_table(values, name) -> np.ndarray:
    """(N, L) float64 from N rows of L values, or from N values (one column)."""
    try:
        table = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"medvl_auroc: {name} must be numbers, rows of equal length ({error})") from None
    if table.ndim == 1:
        table = table[:, None]
    if table.ndim != 2:
        raise ValueError(f"medvl_auroc: {name} must be one value or one row of values per study, got {table.shape}")
    return table


def _auc_on_rows(scores, targets, known, rows, column):
    """AUC of `column` over `rows` (repeats allowed), or None when the known entries lack a class."""
    kept = rows[known[rows, column]]
    labels = targets[kept, column]
    if labels.size == 0 or labels.min() == labels.max():
        return None
    return float(roc_auc_score(labels, scores[kept, column]))


# evaluate names a module after its class in snake case: MedvlAuroc is medvl_auroc.
@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MedvlAuroc(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features(
                    {
                        "predictions": datasets.Sequence(datasets.Value("float64")),
                        "references": datasets.Sequence(datasets.Value("float64")),
                    }
                ),
                datasets.Features({"predictions": datasets.Value("float64"), "references": datasets.Value("float64")}),
            ],
        )

    def add_batch(self, *, predictions=None, references=None, **kwargs):
        """Stores a batch of rows."""
        # evaluate picks the input format from the first row, so an empty batch fails there, unclearly.
        if predictions is not None and len(predictions) == 0:
            raise ValueError("medvl_auroc: empty predictions: nothing to evaluate")
        super().add_batch(predictions=predictions, references=references, **kwargs)

    def _compute(
        self, predictions, references, label_names=None, macro_labels=None, bootstrap_samples=1000, seed=0
    ):
        scores, targets = _as_table(predictions, "predictions"), _as_table(references, "references")
        if len(scores) == 0:
            raise ValueError("medvl_auroc: empty predictions: nothing to evaluate")
        if scores.shape != targets.shape:
            raise ValueError(f"medvl_auroc: predictions {scores.shape} and references {targets.shape} differ in shape")
        names = [f"label_{column}" for column in range(scores.shape[1])] if label_names is None else list(label_names)
        if len(names) != scores.shape[1] or len(set(names)) != len(names):
            raise ValueError(f"medvl_auroc: {len(names)} label_names {names} for {scores.shape[1]} distinct columns")
        averaged = names if macro_labels is None else list(macro_labels)
        unknown = [name for name in averaged if name not in names]
        if unknown:
            raise ValueError(f"medvl_auroc: unknown label name(s) {unknown} in macro_labels; labels are {names}")
        bootstrap_samples = check_samples(bootstrap_samples, "medvl_auroc")

        known = ~(np.isnan(targets) | (targets == UNKNOWN_TARGET))
        for column, name in enumerate(names):
            bad = set(np.unique(targets[known[:, column], column]).tolist()) - {0.0, 1.0}
            if bad:
                raise ValueError(
                    f"medvl_auroc: non-binary targets {sorted(bad)} for label {name!r}; targets must be 0 or 1, "
                    f"with {UNKNOWN_TARGET} or NaN for unknown"
                )
            if not np.isfinite(scores[known[:, column], column]).all():
                raise ValueError(f"medvl_auroc: NaN or infinite scores for label {name!r} where the target is known")

        all_rows = np.arange(len(scores))
        per_label = {}
        for column, name in enumerate(names):
            auc = _auc_on_rows(scores, targets, known, all_rows, column)
            if auc is not None:
                per_label[name] = auc
        in_macro = [name for name in averaged if name in per_label]
        macro = float(np.mean([per_label[name] for name in in_macro])) if in_macro else float("nan")

        draws = {name: [] for name in per_label}
        macro_draws = []
        skipped = dict.fromkeys(per_label, 0)
        skipped_macro = 0
        for rows in resamples(len(scores), bootstrap_samples, seed):
            resampled = {name: _auc_on_rows(scores, targets, known, rows, names.index(name)) for name in per_label}
            for name, auc in resampled.items():
                if auc is None:
                    skipped[name] += 1
                else:
                    draws[name].append(auc)
            if in_macro and all(resampled[name] is not None for name in in_macro):
                macro_draws.append(np.mean([resampled[name] for name in in_macro]))
            else:
                skipped_macro += 1
        per_label_ci = {name: interval(values) for name, values in draws.items()}

        below_chance = [name for name, (_, high) in per_label_ci.items() if high < 0.5]
        if below_chance:
            warnings.warn(
                f"medvl_auroc: AUC-ROC's 95% interval lies entirely below 0.5 for {below_chance}: a swapped label "
                f"column? (scores or targets of these labels may be inverted or in another label's column)",
                stacklevel=2,
            )
        return {
            "auroc_macro": macro,
            "auroc_macro_ci": interval(macro_draws),
            "auroc_per_label": per_label,
            "auroc_per_label_ci": per_label_ci,
            "labels_in_macro": in_macro,
            "labels_without_both_classes": [name for name in names if name not in per_label],
            "bootstrap_skipped": skipped,
            "bootstrap_skipped_macro": skipped_macro,
        }


__all__ = ["MedvlAuroc"]
