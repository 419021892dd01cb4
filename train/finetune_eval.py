"""Classification metrics of a fine-tuning run, through the project's AUC-ROC module (`train/metrics/medvl_auroc`):
Trainer's `compute_metrics` (macro AUC, reported as `eval_auroc_macro`, and one AUC per label), the baselines
(a majority-class predictor, the model before training), the final evaluation with bootstrap intervals and one
ROC-curve PNG per label."""

import re
from pathlib import Path

import numpy as np

from train.metrics import load_metric

ROC_FOLDER = "roc_curves"


def probabilities(logits) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float64)
    return 1.0 / (1.0 + np.exp(-logits))


def label_slug(name: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_")


def auroc(scores, targets, label_names, bootstrap_samples=0, seed=0) -> dict:
    """The AUC-ROC module's full result for (N, L) scores and targets (-100: unknown)."""
    # keep_in_memory: no cache files, so ranks of a distributed run computing at once do not share a lock.
    metric = load_metric("medvl_auroc", keep_in_memory=True)
    return metric.compute(
        predictions=np.asarray(scores, dtype=np.float64).tolist(),
        references=np.asarray(targets, dtype=np.float64).tolist(),
        label_names=list(label_names),
        bootstrap_samples=bootstrap_samples,
        seed=seed,
    )


class AurocMetrics:
    """Trainer's `compute_metrics`: macro AUC (`auroc_macro`) and `auroc_<label>` for the labels with both classes
    among the validation targets (no intervals: it runs at every evaluation)."""

    def __init__(self, label_names):
        self.label_names = list(label_names)

    def __call__(self, eval_prediction) -> dict:
        logits = eval_prediction.predictions
        logits = logits[0] if isinstance(logits, tuple) else logits
        result = auroc(probabilities(logits), eval_prediction.label_ids, self.label_names)
        metrics = {"auroc_macro": result["auroc_macro"]}
        metrics.update({f"auroc_{label_slug(name)}": value for name, value in result["auroc_per_label"].items()})
        return metrics


def majority_baseline(train_counts: dict, targets, label_names) -> dict:
    """A predictor that gives every study each label's training prevalence: constant scores, so AUC 0.5 for every
    label with both classes (what 'beating the majority class' means for a ranking metric)."""
    prevalence = [
        train_counts[name]["positive"] / max(1, train_counts[name]["positive"] + train_counts[name]["negative"])
        for name in label_names
    ]
    targets = np.asarray(targets, dtype=np.float64)
    scores = np.tile(np.asarray(prevalence), (len(targets), 1))
    return auroc(scores, targets, label_names)


def summary(result: dict) -> dict:
    """The parts of an AUC-ROC result worth keeping in a JSON file (intervals as lists)."""
    return {
        "auroc_macro": result["auroc_macro"],
        "auroc_macro_ci": list(result["auroc_macro_ci"]),
        "auroc_per_label": result["auroc_per_label"],
        "auroc_per_label_ci": {name: list(ci) for name, ci in result["auroc_per_label_ci"].items()},
        "labels_in_macro": result["labels_in_macro"],
        "labels_without_both_classes": result["labels_without_both_classes"],
        "bootstrap_skipped_macro": result["bootstrap_skipped_macro"],
    }


def plot_roc_curves(scores, targets, label_names, result: dict, output_dir) -> list:
    """One ROC-curve PNG per label with both classes, `<output_dir>/roc_curves/roc_<label>.png`; returns the
    paths relative to `output_dir`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    folder = Path(output_dir) / ROC_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    scores, targets = np.asarray(scores), np.asarray(targets)
    written = []
    for column, name in enumerate(label_names):
        if name not in result["auroc_per_label"]:
            continue
        known = targets[:, column] != -100
        false_positive, true_positive, _ = roc_curve(targets[known, column], scores[known, column])
        low, high = result["auroc_per_label_ci"].get(name, (float("nan"), float("nan")))
        interval = "" if np.isnan(low) else f" (95% CI {low:.3f}-{high:.3f})"
        positives = int(targets[known, column].sum())
        figure, axis = plt.subplots(figsize=(4.5, 4.5))
        axis.plot(false_positive, true_positive, lw=2, label=f"AUC {result['auroc_per_label'][name]:.3f}{interval}")
        axis.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="chance")
        axis.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate", ylabel="true positive rate",
                 title=f"{name}\n{positives} positive / {int(known.sum()) - positives} negative")
        axis.legend(loc="lower right", fontsize=8)
        figure.tight_layout()
        path = folder / f"roc_{label_slug(name)}.png"
        figure.savefig(path, dpi=100)
        plt.close(figure)
        written.append(str(path.relative_to(output_dir)))
    return written


__all__ = ["AurocMetrics", "auroc", "label_slug", "majority_baseline", "plot_roc_curves", "probabilities", "summary"]
