"""Accuracy and F1 for multi-class and multi-label findings classification, with the majority-class
baseline beside them, as an `evaluate` module loadable by path."""

import datasets
import evaluate
import numpy as np
from sklearn.metrics import accuracy_score, f1_score

_DESCRIPTION = """
Accuracy and F1 (macro and micro) from scikit-learn, for two kinds of input, told apart by their shape:

- multi-class: one class id per study (predictions are the argmax class ids, not scores). Accuracy is
  the fraction correct; macro F1 averages over the classes seen in the references or predictions.
- multi-label: a row of L values per study. References are 0/1; predictions are 0/1 or scores, and a
  score at or above `threshold` counts as positive. Accuracy is subset accuracy (the whole row right);
  macro F1 averages the L labels' F1, micro F1 pools their counts.

F1 of a class or label with neither true nor predicted positives is 0 (`zero_division=0`).

`majority_baseline_accuracy` is the accuracy of always predicting the most common reference class
(multi-label: the most common whole label row, often "no finding"): the best any constant prediction
reaches, and the number a model's accuracy must beat on imbalanced clinical labels.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: one class id per study (multi-class), or one row of L 0/1 values or scores (multi-label).
    references: the same shape: class ids, or rows of L 0/1 targets.
    threshold: multi-label scores at or above it count as positive (default 0.5).
Returns:
    accuracy, f1_macro, f1_micro, majority_baseline_accuracy: floats in [0, 1].
Examples:
    >>> from train.metrics import load_metric
    >>> classification = load_metric("medvl_classification")
    >>> classification.compute(predictions=[0, 2, 1, 0], references=[0, 1, 1, 0])["accuracy"]
    0.75
    >>> classification.compute(predictions=[[0.9, 0.2], [0.4, 0.7]], references=[[1, 0], [0, 1]])["f1_macro"]
    1.0
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
"""


def _as_array(values, name) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"medvl_classification: {name} must be numbers, rows of equal length ({error})") from None
    if not np.isfinite(array).all():
        raise ValueError(f"medvl_classification: {name} hold NaN or infinite values")
    return array


def _class_ids(values, name) -> np.ndarray:
    fractional = values[values != np.round(values)]
    if fractional.size:
        raise ValueError(
            f"medvl_classification: multi-class {name} must be whole class ids, got {fractional[:3].tolist()} "
            "(pass the argmax class; score probabilities with medvl_auroc)"
        )
    return values.astype(np.int64)


# evaluate names a module after its class in snake case: MedvlClassification is medvl_classification.
@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MedvlClassification(evaluate.Metric):
    def _info(self):
        # Stored as floats and checked here: an integer feature would silently truncate a score of 0.7 to 0.
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features({"predictions": datasets.Value("float64"), "references": datasets.Value("float64")}),
                datasets.Features(
                    {
                        "predictions": datasets.Sequence(datasets.Value("float64")),
                        "references": datasets.Sequence(datasets.Value("float64")),
                    }
                ),
            ],
        )

    def add_batch(self, *, predictions=None, references=None, **kwargs):
        """Stores a batch of studies."""
        # evaluate picks the input format from the first row, so an empty batch fails there, unclearly.
        if predictions is not None and len(predictions) == 0:
            raise ValueError("medvl_classification: empty predictions: nothing to evaluate")
        super().add_batch(predictions=predictions, references=references, **kwargs)

    def _compute(self, predictions, references, threshold=0.5):
        predicted, target = _as_array(predictions, "predictions"), _as_array(references, "references")
        if len(predicted) == 0:
            raise ValueError("medvl_classification: empty predictions: nothing to evaluate")
        if predicted.shape != target.shape:
            raise ValueError(
                f"medvl_classification: predictions {predicted.shape} and references {target.shape} differ in shape"
            )
        if target.ndim == 1:
            predicted, target = _class_ids(predicted, "predictions"), _class_ids(target, "references")
            classes, counts = np.unique(target, return_counts=True)
            constant = np.full_like(target, classes[np.argmax(counts)])
        elif target.ndim == 2:
            bad = set(np.unique(target).tolist()) - {0.0, 1.0}
            if bad:
                raise ValueError(f"medvl_classification: non-binary multi-label references {sorted(bad)}; use 0 or 1")
            predicted, target = (predicted >= threshold).astype(np.int64), target.astype(np.int64)
            rows, counts = np.unique(target, axis=0, return_counts=True)
            constant = np.tile(rows[np.argmax(counts)], (len(target), 1))
        else:
            raise ValueError(
                f"medvl_classification: predictions must be class ids or rows of labels, got shape {predicted.shape}"
            )
        return {
            "accuracy": float(accuracy_score(target, predicted)),
            "f1_macro": float(f1_score(target, predicted, average="macro", zero_division=0)),
            "f1_micro": float(f1_score(target, predicted, average="micro", zero_division=0)),
            "majority_baseline_accuracy": float(accuracy_score(target, constant)),
        }


__all__ = ["MedvlClassification"]
