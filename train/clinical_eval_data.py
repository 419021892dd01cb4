"""What `train/evaluate_model.py` scores: the evaluation split of a `--data` source with its patient metadata, and
the model (a classification head, or a pretraining checkpoint scored zero-shot) with its processor.

Sources and splits (`--split valid | test`):
- `chexpert:/dir`: valid.csv (CheXpert-v1.0 ships no test labels); sex, age, view from the CSV.
- `mimic-cxr:/dir`: the split file's validate / test rows; view, and sex / age from a patients table (see
  `processing.readers.mimic_cxr`).
- `synthcxr:/dir` (a folder written by `medvl data synth`): its MIMIC-CXR-JPG layout, read like MIMIC-CXR.
- `synthcxr:n=256,size=64,seed=7`: generated studies, used whole (a generated set is one split; `--split` is only
  recorded), with view, sex and age. Study i of a seed is the same in every set of that seed, so a seed the model
  was fine-tuned on is refused (read from the run's run_config.yaml).
- `saved:/dir`: a saved DatasetDict's validation (or test) split, or a single saved Dataset used whole.
"""

from pathlib import Path

import datasets
import yaml
from accelerate import PartialState

import processing
from processing.synthcxr import patient_metadata
from train.data_loading import parse_data_spec
from train.data_sources import synthcxr_dataset

METADATA_COLUMNS = ("sex", "age", "view", "site")
SPLITS = {"valid": "valid", "validation": "valid", "validate": "valid", "test": "test"}
MIMIC_SPLITS = {"valid": "validate", "test": "test"}
SAVED_SPLITS = {"valid": ("validation", "valid", "validate"), "test": ("test",)}
CLASSIFIER = "MedVLForImageClassification"
ZERO_SHOT_MODELS = ("MedVLForPreTraining", "MedVLModel")


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"--split {split!r}: choose 'valid' or 'test'")
    return SPLITS[split]


def _synthcxr_folder(location: str) -> Path:
    root = Path(location)
    folder = root / "mimic-cxr-jpg" if (root / "mimic-cxr-jpg").is_dir() else root
    if not folder.is_dir():
        raise FileNotFoundError(f"--data synthcxr:{location}: no such folder (write one with `medvl data synth`)")
    return folder


def _generated_synthcxr(options: dict, cache_root) -> datasets.Dataset:
    dataset = synthcxr_dataset(options, cache_root, PartialState())
    patients = [patient_metadata(options["seed"], index) for index in range(len(dataset))]
    dataset = dataset.add_column("sex", [sex for sex, _ in patients])
    return dataset.add_column("age", [age for _, age in patients])


def _saved_split(location: str, split: str):
    loaded = datasets.load_from_disk(location)
    if not isinstance(loaded, datasets.DatasetDict):
        return loaded
    for name in SAVED_SPLITS[split]:
        if name in loaded:
            return loaded[name]
    raise ValueError(f"--data saved:{location}: no {' / '.join(SAVED_SPLITS[split])} split among {list(loaded)}")


def load_evaluation_split(spec_text: str, split: str, cache_root, columns=("image", "labels")) -> datasets.Dataset:
    """The rows to score, with `columns` (report generation: image and report) and whichever of sex / age / view /
    site the source has; raises naming the source for a missing column or an empty split."""
    split = check_split(split)
    kind, _, rest = spec_text.partition(":")
    if kind == "synthcxr" and rest and "=" not in rest:
        dataset = processing.load_mimic_cxr(_synthcxr_folder(rest), split=MIMIC_SPLITS[split], uncertainty="keep")
    else:
        spec = parse_data_spec(spec_text)
        if spec.kind == "synthcxr":
            dataset = _generated_synthcxr(spec.options, cache_root)
        elif spec.kind == "chexpert":
            if split == "test":
                raise ValueError(f"--data {spec_text}: CheXpert-v1.0 has labels for train.csv and valid.csv only; "
                                 "use --split valid")
            dataset = processing.load_chexpert(spec.location, split="valid", uncertainty="keep")
        elif spec.kind == "mimic-cxr":
            dataset = processing.load_mimic_cxr(spec.location, split=MIMIC_SPLITS[split], uncertainty="keep")
        elif spec.kind == "saved":
            dataset = _saved_split(spec.location, split)
        else:
            raise ValueError(f"--data {spec_text}: evaluation reads labelled chexpert:, mimic-cxr:, synthcxr: or "
                             f"saved: sources, not {spec.kind}:")
    names = dataset.column_names
    missing = [name for name in columns if name not in names]
    if missing:
        raise ValueError(f"--data {spec_text}: the {split} split has no {missing} column(s) (columns: {names})")
    if len(dataset) == 0:
        raise ValueError(f"--data {spec_text}: the {split} split has no rows")
    return dataset.select_columns([*columns, *[name for name in METADATA_COLUMNS if name in names]])


def _run_config(model_folder: Path):
    for folder in (model_folder, model_folder.parent):
        path = folder / "run_config.yaml"
        if path.is_file():
            return yaml.safe_load(path.read_text()) or {}
    return {}


def check_not_training_data(spec_text: str, split: str, model_folder) -> None:
    """A generated SynthCXR set with the seed the model was fine-tuned (or, for --split test, validated) on is
    refused: its studies are the training studies."""
    kind, _, rest = spec_text.partition(":")
    if kind != "synthcxr" or "=" not in rest:
        return
    seed = parse_data_spec(spec_text).options["seed"]
    config = _run_config(Path(model_folder))
    used = {"training": config.get("data"), "validation": config.get("validation_data")}
    resolved = config.get("resolved") or {}
    used["validation"] = used["validation"] or resolved.get("validation_data")
    for role, specs in used.items():
        for text in [specs] if isinstance(specs, str) else specs or []:
            if str(text).startswith("synthcxr:") and "=" in str(text) and parse_data_spec(text).options["seed"] == seed:
                if role == "training" or check_split(split) == "test":
                    raise ValueError(f"--data {spec_text}: seed {seed} generated the model's {role} data ({text}); "
                                     f"evaluate on another seed")


__all__ = [
    "CLASSIFIER",
    "METADATA_COLUMNS",
    "ZERO_SHOT_MODELS",
    "check_not_training_data",
    "check_split",
    "load_evaluation_split",
]
