"""Reports per second through MedVL's text pipeline: clinical normalisation alone, and
normalisation followed by the domain BPE tokenizer, against the tokenizer alone on the raw
reports (what a user would run without the normaliser), all in the same run.

Reports are MIMIC-CXR-style SynthCXR reports (full text with INDICATION, TECHNIQUE, COMPARISON,
FINDINGS, IMPRESSION headers) with names, dates, times, pager and record numbers, and clinical
abbreviations mixed in, as real reports carry them.

    python benchmarks/bench_text_pipeline.py --reports 5000
writes benchmarks/results/text_pipeline.json.
"""

import argparse
import json
import multiprocessing
import os
import platform
import random
import statistics
import time
from pathlib import Path

import numpy as np
import tokenizers
import transformers
from tqdm.auto import tqdm

from processing.clinical_text_medvl import (
    ClinicalTextNormalizer,
    deidentify,
    expand_abbreviations,
    extract_sections,
    standardize_terms,
)
from processing.synthcxr.findings import sample_findings
from processing.synthcxr.reports import INDICATIONS, mimic_report_text, write_report
from processing.tokenizer_training import train_clinical_tokenizer

RESULTS = Path(__file__).resolve().parent / "results"
NAMES = ("Smith", "Nguyen", "O'Brien", "Garcia", "Kowalski", "Patel", "Chen", "Johnson")
SHORTHAND = {"pneumothorax": "PTX", "pneumonia": "PNA", "endotracheal tube": "ETT", "edema": "oedema", "with": "w/",
             "history of": "h/o", "left lower lobe": "LLL", "right lower lobe": "RLL", "nasogastric": "NG"}


def synthetic_reports(n, seed=0):
    """`n` full-text reports with identifiers and abbreviations."""
    reports = []
    text_rng = random.Random(seed)
    for index in tqdm(range(n), desc="reports", unit=" reports"):
        findings = sample_findings(np.random.default_rng([seed, index]))
        view = "AP" if text_rng.random() < 0.2 else "PA"
        findings_text, impression_text, _ = write_report(findings, view, text_rng)
        for word, short in SHORTHAND.items():
            if text_rng.random() < 0.5:
                findings_text = findings_text.replace(word, short)
        if text_rng.random() < 0.6:
            impression_text += (
                f" Findings discussed with Dr. {text_rng.choice(NAMES)} by telephone at "
                f"{text_rng.randint(1, 12)}:{text_rng.randint(10, 59)} {text_rng.choice(('am', 'pm'))} on "
                f"{text_rng.randint(1, 12)}/{text_rng.randint(1, 28)}/20{text_rng.randint(10, 23)}, "
                f"pager {text_rng.randint(10000, 99999)}."
            )
        indication = text_rng.choice(INDICATIONS) + f" MRN {text_rng.randint(10**6, 10**8)}."
        reports.append(mimic_report_text(findings_text, impression_text, view, indication, text_rng))
    return reports


def best_rate(function, n_items, repeats):
    """Items per second of the fastest of `repeats` runs (the least disturbed by other load)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return n_items / min(times), times


def tokenize_all(tokenizer, texts, batch_size=256):
    for start in range(0, len(texts), batch_size):
        tokenizer(texts[start:start + batch_size], truncation=True, padding="max_length")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reports", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--vocab-size", type=int, default=30522)
    parser.add_argument("--out", default=str(RESULTS / "text_pipeline.json"))
    args = parser.parse_args()

    reports = synthetic_reports(args.reports)
    normalizer = ClinicalTextNormalizer()
    start = time.perf_counter()
    tokenizer = train_clinical_tokenizer(reports, vocab_size=args.vocab_size, normalizer=normalizer)
    train_seconds = time.perf_counter() - start

    normalise_rate, normalise_times = best_rate(lambda: [normalizer(r) for r in reports], len(reports), args.repeats)
    pipeline_rate, pipeline_times = best_rate(
        lambda: tokenize_all(tokenizer, [normalizer(r) for r in reports]), len(reports), args.repeats)
    raw_rate, raw_times = best_rate(lambda: tokenize_all(tokenizer, reports), len(reports), args.repeats)
    with multiprocessing.Pool(2) as pool:
        parallel_rate, _ = best_rate(lambda: pool.map(normalizer, reports, chunksize=64), len(reports), args.repeats)
    normalised = [normalizer(r) for r in reports]
    tokenize_normalised_rate, _ = best_rate(lambda: tokenize_all(tokenizer, normalised), len(reports), args.repeats)

    sections = [" ".join(filter(None, (extract_sections(r).get(k) for k in ("findings", "impression")))) for r in reports]
    steps = {
        "extract_sections": lambda: [extract_sections(r) for r in reports],
        "deidentify": lambda: [deidentify(s) for s in sections],
        "expand_abbreviations": lambda: [expand_abbreviations(s) for s in sections],
        "standardize_terms": lambda: [standardize_terms(s) for s in sections],
    }
    step_rates = {name: round(best_rate(step, len(reports), args.repeats)[0], 1) for name, step in steps.items()}

    token_counts = [len(ids) for ids in tokenizer(normalised).input_ids]
    raw_counts = [len(ids) for ids in tokenizer(reports).input_ids]
    result = {
        "benchmark": "text_pipeline",
        "reports": len(reports),
        "mean_report_chars": round(statistics.mean(map(len, reports)), 1),
        "mean_normalised_chars": round(statistics.mean(map(len, normalised)), 1),
        "mean_tokens_normalised": round(statistics.mean(token_counts), 1),
        "mean_tokens_raw": round(statistics.mean(raw_counts), 1),
        "tokenizer": {"style": "bert", "vocab_size_target": args.vocab_size, "vocab_size": len(tokenizer),
                      "train_seconds": round(train_seconds, 2), "max_length": tokenizer.model_max_length},
        "reports_per_second": {
            "normalise": round(normalise_rate, 1),
            "normalise_2_processes": round(parallel_rate, 1),
            "normalise_plus_tokenize": round(pipeline_rate, 1),
            "tokenize_raw_reports (peer baseline)": round(raw_rate, 1),
            "tokenize_normalised_reports": round(tokenize_normalised_rate, 1),
        },
        "normalise_step_reports_per_second": step_rates,
        "ratio_normalise_plus_tokenize_to_tokenize_only": round(pipeline_rate / raw_rate, 3),
        "seconds_per_run": {"normalise": normalise_times, "normalise_plus_tokenize": pipeline_times, "tokenize_raw": raw_times},
        "notes": "Normalisation is single-threaded Python (normalise_2_processes: a 2-process pool); "
                 "the tokenizer batch-encodes in Rust "
                 f"(TOKENIZERS_PARALLELISM={os.environ.get('TOKENIZERS_PARALLELISM', 'unset')}). "
                 f"Best of the repeats is reported. Load average at the end: {os.getloadavg()[0]:.1f}.",
        "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "tokenizers": tokenizers.__version__, "transformers": transformers.__version__},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["reports_per_second"], indent=2))
    print(f"normalise+tokenize / tokenize-only: {result['ratio_normalise_plus_tokenize_to_tokenize_only']}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
