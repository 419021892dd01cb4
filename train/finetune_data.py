"""Classification data for fine-tuning: the training and validation splits of a labelled `--data` source, CheXpert
label vectors under the uncertainty policies, and the collator that runs the processor.

Labels arrive as each reader gives them, a dict over CheXpert's 14 labels with 1, 0, -1 (uncertain) or None (blank:
the report does not mention the finding), and become one float vector per study here, in one place for every
source:
- uncertain: U-Ones 1, U-Zeros 0, U-Ignore -100 (the classification loss and the AUC both skip -100);
- blank: 0 by default, as CheXpert's labeler means it (a finding the report does not mention is taken as absent;
  "No Finding", for one, is only ever 1 or blank), or -100 with `blank_policy="ignore"`.
The test split is never read here.
"""

import math
import random
from dataclasses import dataclass

import datasets
import torch
from accelerate import PartialState
from torch.utils.data import Dataset
from transformers import TrainerCallback

import processing
from modeling_medvl.losses_medvl import IGNORE_INDEX
from processing.chexpert import CHEXPERT_LABELS
from train.data_loading import parse_data_spec, sample_seed
from train.data_sources import default_validation_spec, synthcxr_dataset

UNCERTAIN_TARGETS = {"ones": 1.0, "zeros": 0.0, "ignore": float(IGNORE_INDEX)}
BLANK_TARGETS = {"zeros": 0.0, "ignore": float(IGNORE_INDEX)}
FINETUNE_KINDS = ("chexpert", "mimic-cxr", "saved", "synthcxr")
# Each reader's name for the two splits a fine-tuning run reads.
SPLIT_NAMES = {
    "chexpert": {"train": "train", "validation": "valid"},
    "mimic-cxr": {"train": "train", "validation": "validate"},
}
SAVED_VALIDATION_NAMES = ("validation", "valid", "validate")
KEPT_COLUMNS = ("image", "labels")


def resolve_label_names(requested) -> list:
    """`--labels` (default: all 14, in CheXpert's order) checked against CheXpert's label names."""
    if not requested:
        return list(CHEXPERT_LABELS)
    unknown = [name for name in requested if name not in CHEXPERT_LABELS]
    if unknown:
        raise ValueError(f"--labels: unknown label name(s) {unknown}; CheXpert's labels are {CHEXPERT_LABELS}")
    repeated = sorted({name for name in requested if list(requested).count(name) > 1})
    if repeated:
        raise ValueError(f"--labels: label name(s) {repeated} given more than once")
    return list(requested)


def label_targets(labels: dict, names, uncertain_policy="ones", blank_policy="zeros") -> list:
    """One study's target vector over `names`: 1.0 / 0.0, or -100.0 where the policy leaves it unknown."""
    uncertain, blank = UNCERTAIN_TARGETS[uncertain_policy], BLANK_TARGETS[blank_policy]
    targets = []
    for name in names:
        value = labels.get(name)
        targets.append(blank if value is None else uncertain if value == -1 else float(value))
    return targets


def _load_split(spec_text: str, split: str, cache_root, num_workers: int, whole_set_ok=False):
    """`split` ("train" or "validation") of a source; a generated SynthCXR set, or a saved single Dataset when
    `whole_set_ok`, is used whole."""
    spec = parse_data_spec(spec_text)
    if spec.kind not in FINETUNE_KINDS:
        raise ValueError(f"--data {spec_text}: fine-tuning reads labelled {FINETUNE_KINDS} sources, not {spec.kind!r}")
    if spec.kind == "synthcxr":
        return synthcxr_dataset(spec.options, cache_root, PartialState(), num_workers)
    if spec.kind == "chexpert":
        return processing.load_chexpert(spec.location, split=SPLIT_NAMES["chexpert"][split], uncertainty="keep")
    if spec.kind == "mimic-cxr":
        return processing.load_mimic_cxr(spec.location, split=SPLIT_NAMES["mimic-cxr"][split], uncertainty="keep")
    loaded = datasets.load_from_disk(spec.location)
    if not isinstance(loaded, datasets.DatasetDict):
        if split != "train" and not whole_set_ok:
            raise ValueError(f"--data {spec_text}: a single Dataset has no validation split; give --validation_data")
        return loaded
    names = ("train",) if split == "train" else SAVED_VALIDATION_NAMES
    for name in names:
        if name in loaded:
            return loaded[name]
    raise ValueError(f"--data {spec_text}: no {' / '.join(names)} split among {list(loaded)}")


def _checked_columns(dataset, source: str, split: str):
    """`image` and `labels` of a split; `source` names it in errors (e.g. "--data chexpert:/data")."""
    names = dataset.column_names or []
    if "labels" not in names:
        raise ValueError(f"{source}: the data set has no labels (columns: {names}); classification needs a "
                         "`labels` column of CheXpert labels")
    if not isinstance(dataset.features["labels"], dict):
        raise ValueError(f"{source}: `labels` must map CheXpert label names to 1 / 0 / -1 / None, got the feature "
                         f"{dataset.features['labels']}")
    if "image" not in names:
        raise ValueError(f"{source}: the data set has no `image` column (columns: {names})")
    if len(dataset) == 0:
        raise ValueError(f"{source}: the {split} split is empty")
    return dataset.select_columns(list(KEPT_COLUMNS))


def label_counts(dataset, names, uncertain_policy, blank_policy) -> dict:
    """{label: {"positive": n, "negative": n, "unknown": n}} after the policies (reads only the labels column)."""
    counts = {name: {"positive": 0, "negative": 0, "unknown": 0} for name in names}
    for labels in dataset.select_columns(["labels"])["labels"]:
        for name, target in zip(names, label_targets(labels, names, uncertain_policy, blank_policy)):
            counts[name]["positive" if target == 1 else "negative" if target == 0 else "unknown"] += 1
    return counts


@dataclass
class ClassificationSplits:
    train: datasets.Dataset
    validation: datasets.Dataset
    train_spec: str
    validation_spec: str
    train_counts: dict
    validation_counts: dict


def load_classification_splits(data_args, label_names, cache_root, num_workers=0) -> ClassificationSplits:
    """The training split of `--data` and the validation split (`--validation_data`, the source's own, or fresh
    SynthCXR studies), with `image` and `labels`; raises naming the source for missing labels or empty splits."""
    train_spec = data_args.data
    validation_spec = data_args.validation_data or train_spec
    if not data_args.validation_data and parse_data_spec(train_spec).kind == "synthcxr":
        # A generated set is one split: fresh studies from another seed validate (as in pretraining).
        validation_spec = default_validation_spec([train_spec], data_args.validation_size)
    train = _checked_columns(
        _load_split(train_spec, "train", cache_root, num_workers), f"--data {train_spec}", "training"
    )
    validation = _checked_columns(
        _load_split(validation_spec, "validation", cache_root, num_workers, bool(data_args.validation_data)),
        f"validation data {validation_spec}", "validation",
    )
    policies = (data_args.uncertain_policy, data_args.blank_policy)
    train_counts = label_counts(train, label_names, *policies)
    validation_counts = label_counts(validation, label_names, *policies)
    if all(count["positive"] + count["negative"] == 0 for count in train_counts.values()):
        raise ValueError(f"--data {train_spec}: no known target for any of {label_names} in the training split "
                         f"(uncertain_policy={policies[0]}, blank_policy={policies[1]})")
    if not any(count["positive"] and count["negative"] for count in validation_counts.values()):
        raise ValueError(f"validation data {validation_spec}: no label among {label_names} has both positive and "
                         "negative studies, so AUC-ROC (the early-stopping metric) is undefined")
    return ClassificationSplits(train, validation, train_spec, validation_spec, train_counts, validation_counts)


class AugmentedRows(Dataset):
    """Training rows with the joint augmentation applied to the image as each row is read (evaluation rows stay
    as they are: Trainer runs one collator for both).

    Each row's draws come from a generator seeded by (run seed, epoch, row index), as in pretraining, not from the
    global random state: the DataLoader fetches a batch ahead of the step that uses it, so on resume Trainer
    restores the global state one batch late. `EpochCallback` keeps `epoch` current."""

    # The joint augmentation also rewrites a report on a flip; classification rows have none to carry.
    _NO_REPORT = "no report"

    def __init__(self, dataset, augmentation, seed=0):
        self.dataset = dataset
        self.augmentation = augmentation
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int):
        self.epoch = epoch

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        row = dict(self.dataset[index])
        rng = random.Random(sample_seed(self.seed, self.epoch, index))
        row["image"], _ = self.augmentation(row["image"], self._NO_REPORT, rng=rng)
        return row


class EpochCallback(TrainerCallback):
    """Tells an `AugmentedRows` the epoch before each epoch's DataLoader iterator (and its workers) starts."""

    def __init__(self, rows: AugmentedRows):
        self.rows = rows

    def on_epoch_begin(self, args, state, control, **kwargs):
        # state.epoch is the fraction of epochs done: a whole number at an epoch's start, less on a resumed one.
        self.rows.set_epoch(math.floor(state.epoch or 0))


class ClassificationCollator:
    """Rows of `image` + `labels` -> `pixel_values` (the processor's image processor) and `(batch, L)` float
    targets with -100 for unknown entries."""

    def __init__(self, processor, label_names, uncertain_policy="ones", blank_policy="zeros"):
        # A MedVLProcessor or a bare MedVLImageProcessor: only the image side is needed.
        self.image_processor = getattr(processor, "image_processor", processor)
        self.label_names = list(label_names)
        self.uncertain_policy = uncertain_policy
        self.blank_policy = blank_policy

    def __call__(self, rows):
        pixel_values = self.image_processor([row["image"] for row in rows], return_tensors="pt")["pixel_values"]
        targets = [
            label_targets(row["labels"], self.label_names, self.uncertain_policy, self.blank_policy) for row in rows
        ]
        return {"pixel_values": pixel_values, "labels": torch.tensor(targets, dtype=torch.float32)}


__all__ = [
    "AugmentedRows",
    "ClassificationCollator",
    "ClassificationSplits",
    "EpochCallback",
    "label_counts",
    "label_targets",
    "load_classification_splits",
    "resolve_label_names",
]
