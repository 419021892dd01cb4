"""Percentile-bootstrap 95% intervals over studies, shared by the metric modules.

`evaluate` runs a module from a copy in its cache folder, where a sibling file does not resolve: the modules import
this one from the installed project (`from train.metrics.bootstrap import ...`).

Every interval resamples the rows (studies, questions) with replacement, `samples` times, from
`numpy.random.default_rng(seed)`: the same seed gives the same resamples, so a metric's intervals are reproducible and
two metrics computed with one seed on the same rows resample the same rows.
"""

import numpy as np

INTERVAL_PERCENTILES = (2.5, 97.5)


def check_samples(samples, metric: str) -> int:
    """`samples` as an int, or a ValueError naming `metric` when it is not a whole number >= 0."""
    if isinstance(samples, bool) or not isinstance(samples, (int, float, np.integer)) or samples < 0 \
            or int(samples) != samples:
        raise ValueError(f"{metric}: bootstrap_samples must be a whole number >= 0, got {samples!r}")
    return int(samples)


def resamples(count: int, samples: int, seed):
    """`samples` arrays of `count` row indices drawn with replacement."""
    rng = np.random.default_rng(seed)
    for _ in range(samples):
        yield rng.integers(0, count, count)


def resample_weights(count: int, samples: int, seed) -> np.ndarray:
    """The same resamples as `resamples`, as a (samples, count) array of how often each row was drawn: for corpus
    metrics computed from per-row counts."""
    return np.array([np.bincount(rows, minlength=count) for rows in resamples(count, samples, seed)]).reshape(
        samples, count
    )


def interval(values) -> tuple:
    """(low, high) 95% percentile interval of the resampled values; (nan, nan) when there are none."""
    if len(values) == 0:
        return (float("nan"), float("nan"))
    low, high = np.percentile(values, INTERVAL_PERCENTILES)
    return (float(low), float(high))


__all__ = ["INTERVAL_PERCENTILES", "check_samples", "interval", "resample_weights", "resamples"]
