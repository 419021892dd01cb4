"""Report-generation data for fine-tuning: image-report pairs of `--data` (mimic-cxr: train / validate, openi: a
share of its images held out for validation, saved: train / validation, synthcxr: generated, validated on fresh
studies from another seed), and the teacher-forcing collator.

Reports are compared in the processor's normal form (the clinical normaliser: abbreviations expanded, de-identified),
the text the model is trained to write; an empty report is dropped from a split (and counted in the log).
"""

from collections import Counter
from dataclasses import dataclass

import datasets

import processing
from modeling_medvl.losses_medvl import IGNORE_INDEX
from train.data_loading import parse_data_spec
from train.data_sources import default_validation_spec
from train.finetune_data import _load_split
from train.finetune_vqa_data import carve_validation
from train.logging_utils import get_logger

logger = get_logger("medvl.finetune")

REPORT_KINDS = ("mimic-cxr", "openi", "saved", "synthcxr")
REPORT_COLUMNS = ("image", "report")


def _load(spec_text: str, split: str, cache_root, num_workers: int, fraction: float, whole_set_ok=False):
    spec = parse_data_spec(spec_text)
    if spec.kind not in REPORT_KINDS:
        raise ValueError(f"--data {spec_text}: report generation reads {REPORT_KINDS} sources (image-report pairs), "
                         f"not {spec.kind!r}")
    if spec.kind == "openi":
        whole = processing.load_openi(spec.location)
        if whole_set_ok:
            return whole
        train, validation = carve_validation(whole, fraction)
        return train if split == "train" else validation
    return _load_split(spec_text, split, cache_root, num_workers, whole_set_ok)


def _checked(dataset, source: str, split: str):
    names = dataset.column_names or []
    missing = [name for name in REPORT_COLUMNS if name not in names]
    if missing:
        raise ValueError(f"{source}: the data set lacks the column(s) {missing} (columns: {names})")
    dataset = dataset.select_columns(list(REPORT_COLUMNS))
    kept = [index for index, report in enumerate(dataset["report"]) if report and report.strip()]
    if len(kept) < len(dataset):
        logger.warning(f"{source}: {len(dataset) - len(kept)} {split} studies without a report left out")
        dataset = dataset.select(kept)
    if len(dataset) == 0:
        raise ValueError(f"{source}: the {split} split has no study with a report")
    return dataset


@dataclass
class ReportSplits:
    train: datasets.Dataset
    validation: datasets.Dataset
    train_spec: str
    validation_spec: str


def load_report_splits(data_args, cache_root, num_workers=0) -> ReportSplits:
    train_spec = data_args.data
    validation_spec = data_args.validation_data or train_spec
    kind = parse_data_spec(train_spec).kind
    if not data_args.validation_data and kind == "synthcxr":
        validation_spec = default_validation_spec([train_spec], data_args.validation_size)
    fraction = data_args.validation_fraction
    train = _load(train_spec, "train", cache_root, num_workers, fraction)
    validation = _load(validation_spec, "validation", cache_root, num_workers, fraction,
                       bool(data_args.validation_data))
    if not data_args.validation_data and kind == "openi":
        validation_spec = f"{train_spec} (held-out {fraction:g} of its images)"
    return ReportSplits(_checked(train, f"--data {train_spec}", "training"),
                        _checked(validation, f"validation data {validation_spec}", "validation"),
                        train_spec, validation_spec)


def normalized_reports(processor, reports) -> list:
    """Reports as the model reads and writes them (the processor's clinical normaliser, when it normalises)."""
    return [processor.normalize(report) if processor.normalize_text else report for report in reports]


def most_frequent_report(processor, reports) -> str:
    """The most frequent training report (normalised); among equally frequent ones, the first seen."""
    counts = Counter(normalized_reports(processor, reports))
    return max(counts, key=counts.get)


class ReportCollator:
    """Rows of image + report -> `pixel_values`, the report's `input_ids` / `attention_mask` (start and end tokens
    included) and `labels`: the same ids with padding at -100 (the model shifts them: position t predicts t+1)."""

    def __init__(self, processor, max_length=128):
        self.processor = processor
        self.max_length = max_length

    def __call__(self, rows):
        batch = self.processor(images=[row["image"] for row in rows], text=[row["report"] for row in rows],
                               padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, IGNORE_INDEX)
        return {
            "pixel_values": batch["pixel_values"],
            "input_ids": batch["input_ids"],
            "attention_mask": batch["attention_mask"],
            "labels": labels,
        }


__all__ = [
    "ReportCollator",
    "ReportSplits",
    "load_report_splits",
    "most_frequent_report",
    "normalized_reports",
]
