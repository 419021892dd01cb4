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
import random
import statistics
import time
from pathlib import Path

import numpy as np
import tokenizers
import transformers
from tqdm.auto import tqdm

from machine_record import load_average, machine, write_json
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
    return interleaved_rates({"case": function}, n_items, repeats)[0]["case"]


def interleaved_rates(cases, n_items, repeats):
    """Items per wall-clock second and per CPU second (this process, all threads) of each case,
    fastest run of each, taken in rounds (every case once per round) so that load from other
    processes hits all cases alike; CPU time is the steadier of the two on a shared machine."""
    wall, cpu = {name: [] for name in cases}, {name: [] for name in cases}
    for _ in range(repeats):
        for name, function in cases.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            function()
            wall[name].append(round(time.perf_counter() - start, 4))
            cpu[name].append(round(time.process_time() - start_cpu, 4))
    rates = {name: (n_items / min(wall[name]), n_items / min(cpu[name])) for name in cases}
    return rates, wall, cpu


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

    load_at_start = load_average()
    reports = synthetic_reports(args.reports)
    normalizer = ClinicalTextNormalizer()
    start = time.perf_counter()
    tokenizer = train_clinical_tokenizer(reports, vocab_size=args.vocab_size, normalizer=normalizer)
    train_seconds = time.perf_counter() - start

    normalised = [normalizer(r) for r in reports]
    rates, wall_times, cpu_times = interleaved_rates({
        "normalise": lambda: [normalizer(r) for r in reports],
        "normalise_plus_tokenize": lambda: tokenize_all(tokenizer, [normalizer(r) for r in reports]),
        "tokenize_raw": lambda: tokenize_all(tokenizer, reports),
        "tokenize_normalised": lambda: tokenize_all(tokenizer, normalised),
    }, len(reports), args.repeats)
    (normalise_rate, normalise_cpu), (pipeline_rate, pipeline_cpu) = rates["normalise"], rates["normalise_plus_tokenize"]
    (raw_rate, raw_cpu), (tokenize_normalised_rate, _) = rates["tokenize_raw"], rates["tokenize_normalised"]
    with multiprocessing.Pool(2) as pool:
        parallel_rate, _ = best_rate(lambda: pool.map(normalizer, reports, chunksize=64), len(reports), args.repeats)

    sections = [" ".join(filter(None, (extract_sections(r).get(k) for k in ("findings", "impression")))) for r in reports]
    steps = {
        "extract_sections": lambda: [extract_sections(r) for r in reports],
        "deidentify": lambda: [deidentify(s) for s in sections],
        "expand_abbreviations": lambda: [expand_abbreviations(s) for s in sections],
        "standardize_terms": lambda: [standardize_terms(s) for s in sections],
    }
    step_rates = {name: round(rate[1], 1) for name, rate in interleaved_rates(steps, len(reports), args.repeats)[0].items()}

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
        "reports_per_cpu_second": {"normalise": round(normalise_cpu, 1), "normalise_plus_tokenize": round(pipeline_cpu, 1),
                                   "tokenize_raw_reports (peer baseline)": round(raw_cpu, 1)},
        "normalise_step_reports_per_cpu_second": step_rates,
        "ratio_normalise_plus_tokenize_to_tokenize_only": round(pipeline_rate / raw_rate, 3),
        "ratio_normalise_plus_tokenize_to_tokenize_only_cpu": round(pipeline_cpu / raw_cpu, 3),
        "seconds_per_run": wall_times,
        "cpu_seconds_per_run": cpu_times,
        "notes": "Normalisation is single-threaded Python (normalise_2_processes: a 2-process pool); "
                 "the tokenizer batch-encodes in Rust "
                 f"(TOKENIZERS_PARALLELISM={os.environ.get('TOKENIZERS_PARALLELISM', 'unset')}; on this machine it "
                 "uses about one core: its CPU time is close to its wall time). Cases run in interleaved rounds; the "
                 "fastest round of each is reported, by wall clock and by CPU time of this process. Load average "
                 f"at the start: {load_at_start:.1f}, at the end: {load_average():.1f}.",
        "machine": machine(tokenizers, transformers, load_at_start=load_at_start),
    }
    write_json(args.out, result)
    print(json.dumps(result["reports_per_second"], indent=2))
    print(f"normalise+tokenize / tokenize-only: {result['ratio_normalise_plus_tokenize_to_tokenize_only']} (wall), "
          f"{result['ratio_normalise_plus_tokenize_to_tokenize_only_cpu']} (CPU time)")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
