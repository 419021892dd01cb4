"""Medical VQA accuracy, closed and open questions apart, as an `evaluate` module loadable by path."""

import re

import datasets
import evaluate
import numpy as np

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
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: the answers, one string per question.
    references: the reference answers, one string per question.
    answer_types: "CLOSED" or "OPEN" per question (any case).
    answer_vocabulary: optional list of the allowed answers.
Returns:
    accuracy, closed_accuracy, open_accuracy: floats in [0, 1] (NaN for a kind with no questions),
    num_closed, num_open: question counts,
    out_of_vocabulary: predictions outside `answer_vocabulary` (0 without one).
Examples:
    >>> from train.metrics import load_metric
    >>> vqa = load_metric("medvl_vqa")
    >>> vqa.compute(predictions=["Yes", "the left lung"], references=["yes", "right lung"],
    ...             answer_types=["CLOSED", "OPEN"])["closed_accuracy"]
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


def _mean(values):
    return float(np.mean(values)) if len(values) else float("nan")


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

    def _compute(self, predictions, references, answer_types, answer_vocabulary=None):
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
        return {
            "accuracy": _mean(correct),
            "closed_accuracy": _mean(correct[closed]),
            "open_accuracy": _mean(correct[~closed]),
            "num_closed": int(closed.sum()),
            "num_open": int((~closed).sum()),
            "out_of_vocabulary": out_of_vocabulary,
        }


__all__ = ["ANSWER_TYPES", "MedvlVqa", "normalize_answer"]
