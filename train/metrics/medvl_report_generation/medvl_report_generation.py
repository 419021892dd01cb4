"""BLEU-1..4, CIDEr and ROUGE-L for generated radiology reports, as an `evaluate` module loadable by path."""

import datasets
import evaluate
import numpy as np
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.bleu.bleu_scorer import cook_refs, cook_test
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.cider.cider_scorer import precook
from rouge_score import rouge_scorer, tokenizers
from scipy import sparse

from train.metrics.bootstrap import check_samples, interval, resample_weights

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

95% intervals are percentile bootstrap intervals over studies: the studies are resampled with replacement
`bootstrap_samples` times and each resample is scored as a corpus, as a test set of those studies would be: BLEU from
the resample's summed n-gram matches and lengths (its brevity penalty included), CIDEr-D with the document
frequencies (the IDF) recomputed on the resample's references, a study drawn twice counting twice, ROUGE-L as the
resample's mean. The point estimates are the libraries' own; the resamples are scored from n-gram counts cooked once
by pycocoevalcap's own functions, in sparse matrix products, since rescoring each resample with pycocoevalcap takes
about 0.3 s per metric for 300 reports (two minutes for 200 resamples of BLEU and CIDEr) where this takes under a
second (1,000 resamples: about 1.5 s on one CPU thread). On one study, or
on studies that all repeat one report, every resample is the same corpus and each interval is that single value
(CIDEr 0 there: an n-gram in every reference has IDF 0).

METEOR and SPICE are left out: pycocoevalcap runs them in Java.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: generated reports, one string per study.
    references: the reference report per study: one string, or a list of one or more strings.
    bootstrap_samples: resamples for the intervals (default 1000; 0 skips them and their keys).
    seed: seed of the resampling (default 0); the same seed gives the same intervals.
Returns:
    bleu_1, bleu_2, bleu_3, bleu_4, rouge_l: floats in [0, 1]; cider: a float >= 0 (up to 10);
    bleu_1_ci, ..., cider_ci, rouge_l_ci: (low, high) 95% intervals.
Examples:
    >>> from train.metrics import load_metric
    >>> report_generation = load_metric("medvl_report_generation")
    >>> report_generation.compute(predictions=["No acute findings."], references=["no acute findings"],
    ...                           bootstrap_samples=0)["rouge_l"]
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
NGRAM_ORDER = 4
CIDER_SIGMA = 6.0  # pycocoevalcap's Cider defaults
RESAMPLES_PER_PRODUCT = 50  # bounds the dense (n-grams x resamples) blocks of the CIDEr resamples


def tokenize(text) -> str:
    """The tokens of `text` joined by single spaces, the form pycocoevalcap's scorers split on."""
    return " ".join(_TOKENIZER.tokenize(text))


def _as_report_list(reference) -> list:
    if isinstance(reference, str):
        return [reference]
    if isinstance(reference, (list, tuple)) and all(isinstance(report, str) for report in reference):
        return list(reference)
    raise ValueError(f"medvl_report_generation: a reference must be a string or a list of strings, got {reference!r}")


def bleu_resampled(hypotheses, references, weights) -> np.ndarray:
    """(resamples, 4) corpus BLEU-1..4 of each resample (`weights`: (resamples, studies) draw counts), from each
    study's n-gram matches, lengths and closest reference length as pycocoevalcap's BleuScorer cooks them."""
    cooked = [cook_test(hypothesis, cook_refs(reports), eff="closest")
              for hypothesis, reports in zip(hypotheses, references)]
    lengths = weights @ np.array([[item["testlen"], item["reflen"]] for item in cooked], dtype=np.float64)
    guess = weights @ np.array([item["guess"] for item in cooked], dtype=np.float64)
    correct = weights @ np.array([item["correct"] for item in cooked], dtype=np.float64)
    small, tiny = 1e-9, 1e-15  # BleuScorer's guards against empty counts
    orders = np.arange(1, NGRAM_ORDER + 1)
    bleu = np.cumprod((correct + tiny) / (guess + small), axis=1) ** (1.0 / orders)
    ratio = (lengths[:, 0] + tiny) / (lengths[:, 1] + small)
    return bleu * np.where(ratio < 1, np.exp(1 - 1 / ratio), 1.0)[:, None]


def cider_resampled(hypotheses, references, weights) -> np.ndarray:
    """(resamples,) CIDEr-D of each resample scored as a corpus, the document frequencies recomputed on it: what
    pycocoevalcap's Cider gives on the resampled studies, each study counted as often as it was drawn.

    pycocoevalcap weighs n-gram g by idf(g) = log(studies) - log(max(1, df(g))), df(g) the studies with g in a
    reference, and sums per n-gram order min(h idf, r idf) r idf / (|h idf| |r idf|) over each hypothesis-reference
    pair (h, r: term counts), times a Gaussian length penalty. idf >= 0, so that sum is (sum min(h, r) r idf^2) /
    sqrt((sum h^2 idf^2)(sum r^2 idf^2)): three sparse count matrices, cooked once, times idf^2 per resample."""
    count = len(hypotheses)
    ngrams = {}

    def row(text):
        counts = precook(text, NGRAM_ORDER)
        return {ngrams.setdefault(ngram, len(ngrams)): float(value) for ngram, value in counts.items()}

    def matrix(rows):
        cells = [(index, column, value) for index, entries in enumerate(rows) for column, value in entries.items()]
        index, column, value = zip(*cells) if cells else ((), (), ())
        return sparse.csr_matrix((value, (index, column)), shape=(len(rows), len(ngrams)))

    hypothesis_rows = [row(hypothesis) for hypothesis in hypotheses]
    reference_rows = [[row(report) for report in reports] for reports in references]
    pairs = np.array([study for study, reports in enumerate(reference_rows) for _ in reports])
    pair_rows = [entries for reports in reference_rows for entries in reports]
    order = np.array([len(ngram) - 1 for ngram in ngrams])

    def length(entries):  # pycocoevalcap's length in the penalty: the count of bigrams
        return sum(value for column, value in entries.items() if order[column] == 1)

    delta = np.array([length(hypothesis_rows[study]) - length(entries) for study, entries in zip(pairs, pair_rows)])
    penalty = np.exp(-(delta**2) / (2 * CIDER_SIGMA**2))[:, None]
    hypothesis_squares = matrix([{c: v * v for c, v in entries.items()} for entries in hypothesis_rows])
    reference_squares = matrix([{c: v * v for c, v in entries.items()} for entries in pair_rows])
    overlap = matrix([{c: min(v, hypothesis_rows[study].get(c, 0.0)) * v for c, v in entries.items()}
                      for study, entries in zip(pairs, pair_rows)])
    in_references = matrix([dict.fromkeys([c for entries in reports for c in entries], 1.0)
                            for reports in reference_rows])
    # A study's score: its pairs' similarities summed over the orders, averaged over them and its references, * 10.
    to_study = sparse.csr_matrix((10.0 / (NGRAM_ORDER * np.bincount(pairs)[pairs]), (pairs, np.arange(len(pairs)))),
                                 shape=(count, len(pairs)))
    scores = []
    for start in range(0, len(weights), RESAMPLES_PER_PRODUCT):
        block = np.asarray(weights[start:start + RESAMPLES_PER_PRODUCT], dtype=np.float64).T  # (studies, resamples)
        idf_squared = (np.log(count) - np.log(np.maximum(1.0, in_references.T @ block))) ** 2
        similarity = np.zeros((len(pairs), block.shape[1]))
        for n in range(NGRAM_ORDER):
            weighted = idf_squared * (order == n)[:, None]
            norms = np.sqrt((hypothesis_squares @ weighted)[pairs] * (reference_squares @ weighted))
            products = overlap @ weighted
            similarity += np.divide(products, norms, out=products, where=norms > 0)
        scores.append((block * (to_study @ (similarity * penalty))).sum(0) / count)
    return np.concatenate(scores)


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

    def _compute(self, predictions, references, bootstrap_samples=1000, seed=0):
        if len(predictions) == 0:
            raise ValueError("medvl_report_generation: empty predictions: nothing to evaluate")
        if len(predictions) != len(references):
            raise ValueError(
                f"medvl_report_generation: {len(predictions)} predictions for {len(references)} references"
            )
        empty = [row for row, reports in enumerate(references) if not reports]
        if empty:
            raise ValueError(f"medvl_report_generation: no reference report for studies {empty[:10]}")
        bootstrap_samples = check_samples(bootstrap_samples, "medvl_report_generation")

        hypotheses = [tokenize(prediction) for prediction in predictions]
        gold = [[tokenize(reference) for reference in reports] for reports in references]
        # pycocoevalcap's scorers take {id: [tokenised text, ...]}, one hypothesis per id.
        by_id = dict(enumerate(gold)), {row: [text] for row, text in enumerate(hypotheses)}
        bleu, _ = Bleu(NGRAM_ORDER).compute_score(*by_id, verbose=0)
        cider, _ = Cider(n=NGRAM_ORDER, sigma=CIDER_SIGMA).compute_score(*by_id)
        rouge = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
        rouge_l = np.array([rouge.score_multi(reports, prediction)["rougeL"].fmeasure
                            for prediction, reports in zip(predictions, references)])
        result = {
            **{f"bleu_{n}": float(score) for n, score in enumerate(bleu, start=1)},
            "cider": float(cider),
            "rouge_l": float(np.mean(rouge_l)),
        }
        if bootstrap_samples:
            weights = resample_weights(len(predictions), bootstrap_samples, seed)
            draws = {**{f"bleu_{n}": column for n, column in
                        enumerate(bleu_resampled(hypotheses, gold, weights).T, start=1)},
                     "cider": cider_resampled(hypotheses, gold, weights),
                     "rouge_l": weights @ rouge_l / len(predictions)}
            result.update({f"{name}_ci": interval(values) for name, values in draws.items()})
        return result


__all__ = ["MedvlReportGeneration", "bleu_resampled", "cider_resampled", "tokenize"]
