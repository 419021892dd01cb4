"""Medical VQA accuracy, closed and open questions apart, as an `evaluate` module loadable by path."""

import re

import datasets
import evaluate
import numpy as np

from train.metrics.bootstrap import check_samples, interval, resamples

_DESCRIPTION = """
Exact-match accuracy for medical visual question answering (VQA-RAD, SLAKE, PathVQA style), reported
for closed questions (yes/no and other fixed choices), open questions and overall, since the two kinds
differ widely in difficulty and a model can look good overall on closed questions alone.

An answer is right when it equals the reference after normalisation: lowercase; every punctuation
character becomes a space ("left-sided" and "left sided" match); the articles "a", "an" and "the" are
dropped; runs of whitespace become one space and the ends are stripped.

With `answer_vocabulary` (e.g. the training set's answers, for a model that classifies over them), a
prediction whose normalised form is outside the normalised vocabulary is counted wrong, even when it
equals the reference, and counted in `out_of_vocabulary`; it is never dropped from the denominator.

95% intervals are percentile bootstrap intervals over questions: all questions are resampled with replacement
`bootstrap_samples` times and the three accuracies computed on each resample, so the closed and open counts vary
between resamples as they would between test sets of this mix. A resample without a question of one kind has no
accuracy for it: it is skipped for that kind and counted in `bootstrap_skipped`. On one question, or on answers all
right (or all wrong), every resample gives the same accuracy and the interval is that single value.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: the answers, one string per question.
    references: the reference answers, one string per question.
    answer_types: "CLOSED" or "OPEN" per question (any case).
    answer_vocabulary: optional list of the allowed answers.
    bootstrap_samples: resamples for the intervals (default 1000; 0 skips them and their keys).
    seed: seed of the resampling (default 0); the same seed gives the same intervals.
Returns:
    accuracy, closed_accuracy, open_accuracy: floats in [0, 1] (NaN for a kind with no questions),
    num_closed, num_open: question counts,
    out_of_vocabulary: predictions outside `answer_vocabulary` (0 without one),
    accuracy_ci, closed_accuracy_ci, open_accuracy_ci: (low, high) 95% intervals ((NaN, NaN) for a kind with no
        questions),
    bootstrap_skipped: {"closed_accuracy": resamples without a closed question, "open_accuracy": ... open}.
Examples:
    >>> from train.metrics import load_metric
    >>> vqa = load_metric("medvl_vqa")
    >>> vqa.compute(predictions=["Yes", "the left lung"], references=["yes", "right lung"],
    ...             answer_types=["CLOSED", "OPEN"], bootstrap_samples=0)["closed_accuracy"]
    1.0
"""

_CITATION = """
@article{lau2018vqarad,
  title = {A dataset of clinically generated visual questions and answers about radiology images},
  author = {Lau, Jason J. and Gayen, Soumya and Ben Abacha, Asma and Demner-Fushman, Dina},
  journal = {Scientific Data},
  volume = {5},
  pages = {180251},
  year = {2018}
}
"""

ANSWER_TYPES = ("CLOSED", "OPEN")
_ARTICLES = {"a", "an", "the"}
_PUNCTUATION = re.compile(r"[^\w\s]|_")


def normalize_answer(text) -> str:
    """Lowercase, punctuation to spaces, articles dropped, whitespace collapsed."""
    words = _PUNCTUATION.sub(" ", str(text).lower()).split()
    return " ".join(word for word in words if word not in _ARTICLES)


SCORES = ("accuracy", "closed_accuracy", "open_accuracy")


def _mean(values):
    return float(np.mean(values)) if len(values) else float("nan")


def _accuracies(correct, closed) -> dict:
    return {"accuracy": _mean(correct), "closed_accuracy": _mean(correct[closed]),
            "open_accuracy": _mean(correct[~closed])}


def _intervals(correct, closed, samples, seed) -> dict:
    draws = {name: [] for name in SCORES}
    for rows in resamples(len(correct), samples, seed):
        for name, value in _accuracies(correct[rows], closed[rows]).items():
            if not np.isnan(value):
                draws[name].append(value)
    return {**{f"{name}_ci": interval(values) for name, values in draws.items()},
            "bootstrap_skipped": {name: samples - len(draws[name]) for name in SCORES[1:]}}


# evaluate names a module after its class in snake case: MedvlVqa is medvl_vqa.
@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MedvlVqa(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Value("string"),
                    "references": datasets.Value("string"),
                    "answer_types": datasets.Value("string"),
                }
            ),
        )

    def _compute(self, predictions, references, answer_types, answer_vocabulary=None, bootstrap_samples=1000, seed=0):
        if len(predictions) == 0:
            raise ValueError("medvl_vqa: empty predictions: nothing to evaluate")
        if not len(predictions) == len(references) == len(answer_types):
            raise ValueError(
                f"medvl_vqa: {len(predictions)} predictions, {len(references)} references and "
                f"{len(answer_types)} answer_types; they must be one per question"
            )
        types = [str(kind).upper() for kind in answer_types]
        bad = sorted({kind for kind in types if kind not in ANSWER_TYPES})
        if bad:
            raise ValueError(f"medvl_vqa: unknown answer type(s) {bad}; answer_types must be 'CLOSED' or 'OPEN'")
        bootstrap_samples = check_samples(bootstrap_samples, "medvl_vqa")

        answers = [normalize_answer(prediction) for prediction in predictions]
        correct = np.array([answer == normalize_answer(reference) for answer, reference in zip(answers, references)])
        out_of_vocabulary = 0
        if answer_vocabulary is not None:
            vocabulary = {normalize_answer(answer) for answer in answer_vocabulary}
            if not vocabulary:
                raise ValueError("medvl_vqa: answer_vocabulary is empty")
            outside = np.array([answer not in vocabulary for answer in answers])
            correct &= ~outside
            out_of_vocabulary = int(outside.sum())
        closed = np.array([kind == "CLOSED" for kind in types])
        result = {
            **_accuracies(correct, closed),
            "num_closed": int(closed.sum()),
            "num_open": int((~closed).sum()),
            "out_of_vocabulary": out_of_vocabulary,
        }
        if bootstrap_samples:
            result.update(_intervals(correct, closed, bootstrap_samples, seed))
        return result


__all__ = ["ANSWER_TYPES", "SCORES", "MedvlVqa", "normalize_answer"]
