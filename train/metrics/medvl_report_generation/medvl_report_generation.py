"""BLEU-1..4, CIDEr and ROUGE-L for generated radiology reports, as an `evaluate` module loadable by path."""

import datasets
import evaluate
import numpy as np
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from rouge_score import rouge_scorer, tokenizers

_DESCRIPTION = """
Corpus metrics for report generation, computed by the libraries the captioning and report-generation
literature uses, on one tokenisation:

- Tokenisation: rouge_score's default tokenizer without stemming: lowercase, every run of characters
  other than a-z and 0-9 is a token boundary (punctuation is dropped; "2.5cm" gives "2", "5cm"; letters
  outside a-z are dropped). Deterministic and Java-free, unlike pycocoevalcap's PTBTokenizer, so scores
  can differ slightly from numbers computed with that tokenizer.
- BLEU-1..4: pycocoevalcap's `Bleu` (corpus BLEU, brevity penalty against the closest reference length).
- CIDEr: pycocoevalcap's `Cider`, the score the COCO caption tools report as CIDEr. Its code is the
  CIDEr-D form (clipped n-gram counts, Gaussian length penalty with sigma 6, times 10), so `cider` here is
  CIDEr-D; it is named `cider` because that is the name under which this exact code's numbers are
  published, and comparable. The n-gram IDF comes from the references of the evaluated set, so the score
  needs a set of reports (on one report every n-gram has IDF 0 and CIDEr is 0).
- ROUGE-L: rouge_score's F-measure of the longest common subsequence, the best over a study's references,
  averaged over studies.

METEOR and SPICE are left out: pycocoevalcap runs them in Java.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: generated reports, one string per study.
    references: the reference report per study: one string, or a list of one or more strings.
Returns:
    bleu_1, bleu_2, bleu_3, bleu_4, rouge_l: floats in [0, 1]; cider: a float >= 0 (up to 10).
Examples:
    >>> from train.metrics import load_metric
    >>> report_generation = load_metric("medvl_report_generation")
    >>> report_generation.compute(predictions=["No acute findings."], references=["no acute findings"])["rouge_l"]
    1.0
"""

_CITATION = """
@inproceedings{papineni2002bleu,
  title = {{BLEU}: a Method for Automatic Evaluation of Machine Translation},
  author = {Papineni, Kishore and Roukos, Salim and Ward, Todd and Zhu, Wei-Jing},
  booktitle = {Proceedings of the 40th Annual Meeting of the Association for Computational Linguistics},
  pages = {311--318},
  year = {2002}
}
@inproceedings{vedantam2015cider,
  title = {{CIDEr}: Consensus-based Image Description Evaluation},
  author = {Vedantam, Ramakrishna and Zitnick, C. Lawrence and Parikh, Devi},
  booktitle = {IEEE Conference on Computer Vision and Pattern Recognition},
  pages = {4566--4575},
  year = {2015}
}
@inproceedings{lin2004rouge,
  title = {{ROUGE}: A Package for Automatic Evaluation of Summaries},
  author = {Lin, Chin-Yew},
  booktitle = {Text Summarization Branches Out},
  pages = {74--81},
  year = {2004}
}
"""

_TOKENIZER = tokenizers.DefaultTokenizer(use_stemmer=False)


def tokenize(text) -> str:
    """The tokens of `text` joined by single spaces, the form pycocoevalcap's scorers split on."""
    return " ".join(_TOKENIZER.tokenize(text))


def _as_report_list(reference) -> list:
    if isinstance(reference, str):
        return [reference]
    if isinstance(reference, (list, tuple)) and all(isinstance(report, str) for report in reference):
        return list(reference)
    raise ValueError(f"medvl_report_generation: a reference must be a string or a list of strings, got {reference!r}")


# evaluate names a module after its class in snake case: MedvlReportGeneration is medvl_report_generation.
@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MedvlReportGeneration(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Sequence(datasets.Value("string"))}
            ),
        )

    # A lone reference string is stored as a one-report list: left as it is, it would be read as a list of
    # characters, or a list in a batch of strings would be stored as its printed form.
    def add_batch(self, *, predictions=None, references=None, **kwargs):
        """Stores a batch of reports."""
        if references is not None:
            references = [_as_report_list(reference) for reference in references]
        super().add_batch(predictions=predictions, references=references, **kwargs)

    def add(self, *, prediction=None, reference=None, **kwargs):
        """Stores one report."""
        reference = None if reference is None else _as_report_list(reference)
        super().add(prediction=prediction, reference=reference, **kwargs)

    def _compute(self, predictions, references):
        if len(predictions) == 0:
            raise ValueError("medvl_report_generation: empty predictions: nothing to evaluate")
        if len(predictions) != len(references):
            raise ValueError(
                f"medvl_report_generation: {len(predictions)} predictions for {len(references)} references"
            )
        empty = [row for row, reports in enumerate(references) if not reports]
        if empty:
            raise ValueError(f"medvl_report_generation: no reference report for studies {empty[:10]}")

        # pycocoevalcap's scorers take {id: [tokenised text, ...]}, one hypothesis per id.
        hypotheses = {row: [tokenize(prediction)] for row, prediction in enumerate(predictions)}
        gold = {row: [tokenize(reference) for reference in reports] for row, reports in enumerate(references)}
        bleu, _ = Bleu(4).compute_score(gold, hypotheses, verbose=0)
        cider, _ = Cider().compute_score(gold, hypotheses)
        rouge = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
        rouge_l = [rouge.score_multi(reports, prediction)["rougeL"].fmeasure
                   for prediction, reports in zip(predictions, references)]
        return {
            **{f"bleu_{n}": float(score) for n, score in enumerate(bleu, start=1)},
            "cider": float(cider),
            "rouge_l": float(np.mean(rouge_l)),
        }


__all__ = ["MedvlReportGeneration", "tokenize"]
