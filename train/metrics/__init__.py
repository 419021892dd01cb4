"""MedVL's evaluation metrics as `evaluate` modules, one folder each (`<name>/<name>.py`), loaded by path.

Loading by path needs no Hub access, so the metrics work offline (`HF_HUB_OFFLINE=1`):

    >>> from train.metrics import load_metric
    >>> auroc = load_metric("medvl_auroc")
    >>> auroc.compute(predictions=scores, references=labels, label_names=names)

The bootstrap 95% intervals of medvl_auroc, medvl_report_generation and medvl_vqa share one resampling,
`train/metrics/bootstrap.py`.
"""

from pathlib import Path

import evaluate

METRICS_DIR = Path(__file__).resolve().parent
METRIC_NAMES = (
    "medvl_auroc",
    "medvl_classification",
    "medvl_report_generation",
    "medvl_vqa",
    "medvl_retrieval",
)


def metric_path(name) -> Path:
    """The folder of the metric module `name` (what `evaluate.load` takes)."""
    if name not in METRIC_NAMES:
        raise ValueError(f"unknown metric {name!r}; MedVL's metrics are {list(METRIC_NAMES)}")
    return METRICS_DIR / name


def load_metric(name, **kwargs) -> evaluate.EvaluationModule:
    """`evaluate.load` of the metric `name` by its folder; keyword arguments go to `evaluate.load`
    (`experiment_id`, `num_process`, `process_id`, `keep_in_memory`, ...)."""
    return evaluate.load(str(metric_path(name)), **kwargs)


__all__ = ["METRICS_DIR", "METRIC_NAMES", "load_metric", "metric_path"]
