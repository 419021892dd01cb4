"""Turn `--data` specs into data sets of image-report rows, through MedVL's readers.

Every source ends with the columns `image`, `report` and, when the source has them, `labels`
(the 14 CheXpert labels). SynthCXR is generated once into `<cache>/synthcxr-n..-size..-seed..`
(a saved `datasets` folder) and loaded from there afterwards.
"""

from pathlib import Path

import datasets

import processing
from processing.chexpert import CHEXPERT_LABELS
from train.data_loading import DataSpec, parse_data_spec, synthcxr_cache_folder
from train.user_errors import MissingPathError, UserError

KEPT_COLUMNS = ("image", "report", "labels")
SYNTHCXR_FEATURES = datasets.Features(
    {
        "image": datasets.Image(),
        "report": datasets.Value("string"),
        "labels": {name: datasets.Value("int8") for name in CHEXPERT_LABELS},
        "view": datasets.Value("string"),
        "study_id": datasets.Value("string"),
    }
)


def _synthcxr_rows(n, size, seed, num_workers=0):
    for study in processing.generate_synthcxr(n, size=size, seed=seed, num_workers=num_workers):
        yield {
            "image": study.image,
            "report": study.report,
            "labels": {name: study.labels.get(name) for name in CHEXPERT_LABELS},
            "view": study.view,
            "study_id": f"synthcxr-{seed}-{study.study_id}",
        }


def synthcxr_dataset(options: dict, cache_root, accelerator, num_workers=0) -> datasets.Dataset:
    """Generate (main process, once) or load the cached SynthCXR set described by `options`."""
    folder = synthcxr_cache_folder(cache_root, options)
    with accelerator.main_process_first():
        if not (folder / "dataset_info.json").is_file():
            if accelerator.is_main_process:
                dataset = datasets.Dataset.from_generator(
                    _synthcxr_rows,
                    gen_kwargs=dict(options, num_workers=num_workers),
                    features=SYNTHCXR_FEATURES,
                    cache_dir=str(Path(cache_root) / "hf_cache"),
                )
                dataset.save_to_disk(str(folder))
        dataset = datasets.load_from_disk(str(folder))
    return dataset


def _load_saved(location: str):
    loaded = datasets.load_from_disk(location)
    if isinstance(loaded, datasets.DatasetDict):
        if "train" not in loaded:
            raise UserError(f"--data saved:{location}: a DatasetDict without a 'train' split ({list(loaded)})")
        loaded = loaded["train"]
    return loaded


def _standard_columns(dataset, spec_text: str):
    names = dataset.column_names
    if names is None:  # some streamed sets only know their columns once read
        names = list(dataset.features or {})
    if "report" not in names and "text" in names:
        dataset = dataset.rename_column("text", "report")
        names = [("report" if name == "text" else name) for name in names]
    missing = [name for name in ("image", "report") if name not in names]
    if missing:
        raise UserError(f"--data {spec_text}: rows lack the column(s) {missing} (columns: {names}; pretraining needs "
                        "image-report pairs)")
    return dataset.select_columns([name for name in KEPT_COLUMNS if name in names])


def load_source(spec_text: str, cache_root, accelerator, seed=0, shuffle_buffer=1000, num_workers=0):
    """One `--data` source as a Dataset (or, for `wds:`, an IterableDataset) of image/report[/labels]."""
    spec: DataSpec = parse_data_spec(spec_text)
    if spec.kind not in ("synthcxr", "wds") and not Path(spec.location).exists():
        raise MissingPathError(f"--data {spec_text}: {spec.location} does not exist (check the path)")
    if spec.kind == "synthcxr":
        dataset = synthcxr_dataset(spec.options, cache_root, accelerator, num_workers)
    elif spec.kind == "mimic-cxr":
        dataset = processing.load_mimic_cxr(spec.location)
    elif spec.kind == "chexpert":  # labels without reports: a fine-tuning source; pretraining finds no `report`
        dataset = processing.load_chexpert(spec.location)
    elif spec.kind == "openi":
        dataset = processing.load_openi(spec.location)
    elif spec.kind == "pairs":
        dataset = processing.load_image_text_pairs(spec.location)
    elif spec.kind == "saved":
        dataset = _load_saved(spec.location)
    else:  # wds
        dataset = processing.load_webdataset(
            spec.location, streaming=True, shuffle_buffer=shuffle_buffer, seed=seed
        )
    return _standard_columns(dataset, spec_text)


def load_training_data(specs, cache_root, accelerator, seed=0, shuffle_buffer=1000, num_workers=0):
    """All `--data` sources concatenated (streams only with streams; `labels` kept if all have it)."""
    sources = [load_source(spec, cache_root, accelerator, seed, shuffle_buffer, num_workers) for spec in specs]
    streamed = [isinstance(source, datasets.IterableDataset) for source in sources]
    if any(streamed) and not all(streamed):
        raise UserError(f"--data {specs}: wds: streams cannot be mixed with map-style sources (use one kind)")
    if len(sources) == 1:
        return sources[0]
    shared = [name for name in KEPT_COLUMNS if all(name in (s.column_names or []) for s in sources)]
    return datasets.concatenate_datasets([source.select_columns(shared) for source in sources])


def default_validation_spec(train_specs, validation_size: int):
    """For SynthCXR training data: fresh studies (another seed) at the training size."""
    for text in train_specs:
        spec = parse_data_spec(text)
        if spec.kind == "synthcxr":
            options = spec.options
            return f"synthcxr:n={validation_size},size={options['size']},seed={options['seed'] + 100003}"
    return None


__all__ = ["load_source", "load_training_data", "default_validation_spec", "synthcxr_dataset"]
