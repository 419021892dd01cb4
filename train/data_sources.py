"""Turn `--data` specs into data sets of image-report rows, through MedVL's readers.

Every source ends with the columns `image`, `report` and, when the source has them, `labels`
(the 14 CheXpert labels). SynthCXR is generated once into `<cache>/synthcxr-n..-size..-seed..`
(a saved `datasets` folder) and loaded from there afterwards.

Splits and views: a source with official splits gives its training split to training (`train`) and its validation
split to validation (MIMIC-CXR `validate`, CheXpert `valid`, a saved DatasetDict's `validation` / `valid` /
`validate`), frontal views only (PA, AP) where the reader knows views, unless the spec says otherwise
(`mimic-cxr:/data?split=validate&view=all`). The test split is never read in pretraining: it is for the final
evaluation (`train/evaluate_model.py --split test`). Each source's split, views and row count are logged and
returned through `record` (pretrain.py writes them into run_config.yaml).

Images are not decoded while a source is loaded (377k full-size JPEGs on every rank before the first step): the
readers only check that each file exists, and an image is decoded when its row is read. A corrupt one is then
skipped: its row is replaced by the next readable row (so a micro-batch keeps its size), and the file is named in
the log and in `<cache>/unreadable_images.tsv`.
"""

import hashlib
from pathlib import Path

import datasets

import processing
from processing.chexpert import CHEXPERT_LABELS
from processing.readers import RowIssues
from train.data_loading import SOURCE_SPLITS, DataSpec, parse_data_spec, synthcxr_cache_folder
from train.logging_utils import get_logger
from train.user_errors import MissingPathError, UserError

logger = get_logger("medvl.data")
ROLES = ("train", "validation")
DEFAULT_VIEWS = ["PA", "AP"]
SAVED_VALIDATION_SPLITS = ("validation", "valid", "validate")
UNREADABLE_IMAGES_FILE = "unreadable_images.tsv"

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


def _load_saved(location: str, split):
    loaded = datasets.load_from_disk(location)
    if not isinstance(loaded, datasets.DatasetDict):
        return loaded, None
    for name in split:
        if name in loaded:
            return loaded[name], name
    raise UserError(f"--data saved:{location}: a DatasetDict without a {' / '.join(split)} split ({list(loaded)})")


def source_split(spec: DataSpec, role: str):
    """The split a source gives to `role` ("train" or "validation"): the spec's, else the official one; None for
    sources without splits. For `saved:` the candidate names, in order."""
    chosen = spec.options.get("split")
    if spec.kind in SOURCE_SPLITS:
        names = SOURCE_SPLITS[spec.kind]
        return names[chosen] if chosen else names["train" if role == "train" else "validation"]
    if spec.kind == "saved":
        return (chosen,) if chosen else ("train",) if role == "train" else SAVED_VALIDATION_SPLITS
    return None


def source_views(spec: DataSpec):
    """The views a source keeps: the spec's (`all`: every view), else the frontal PA and AP; None for sources
    whose reader knows no views."""
    if spec.kind not in ("mimic-cxr", "chexpert"):
        return None
    views = spec.options.get("view", DEFAULT_VIEWS)
    return None if [view.lower() for view in views] == ["all"] else list(views)


def check_pretraining_spec(spec_text: str, role: str = "train") -> DataSpec:
    """Parse a pretraining `--data` / `--validation_data` spec; the test split is refused."""
    spec = parse_data_spec(spec_text)
    if source_split(spec, role) in ("test", ("test",)):
        raise UserError(f"--data {spec_text}: the test split is never read in pretraining (it is for the final "
                        "evaluation: train/evaluate_model.py --split test)")
    return spec


def _read(spec: DataSpec, spec_text: str, role: str, cache_root, accelerator, seed, shuffle_buffer, num_workers):
    """(data set, split, views, malformed rows skipped) of one source."""
    split, views, issues = source_split(spec, role), source_views(spec), RowIssues()
    options = {key: value for key, value in spec.options.items() if key not in ("split", "view")}
    try:
        if spec.kind == "synthcxr":
            dataset = synthcxr_dataset(spec.options, cache_root, accelerator, num_workers)
        elif spec.kind == "mimic-cxr":
            dataset = processing.load_mimic_cxr(
                spec.location, split, view=views, check_images=False, issues=issues, **options
            )
        elif spec.kind == "chexpert":  # labels without reports: a fine-tuning source; pretraining finds no `report`
            dataset = processing.load_chexpert(spec.location, split, view=views, check_images=False, issues=issues)
        elif spec.kind == "openi":
            dataset = processing.load_openi(spec.location, check_images=False, issues=issues, **options)
        elif spec.kind == "pairs":
            dataset = processing.load_image_text_pairs(spec.location, check_images=False, issues=issues, **options)
        elif spec.kind == "saved":
            dataset, split = _load_saved(spec.location, split)
        else:  # wds: checked as it streams
            dataset = processing.load_webdataset(
                spec.location, streaming=True, shuffle_buffer=shuffle_buffer, seed=seed
            )
    except (ValueError, FileNotFoundError) as error:  # the reader's word on the folder or an option's value
        raise UserError(f"--data {spec_text}: {' '.join(str(error).split())}") from None
    return dataset, split, views, issues.skipped


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


def _load(spec_text, role, cache_root, accelerator, seed, shuffle_buffer, num_workers, record):
    spec = check_pretraining_spec(spec_text, role)
    if spec.kind not in ("synthcxr", "wds") and not Path(spec.location).exists():
        raise MissingPathError(f"--data {spec_text}: {spec.location} does not exist (check the path)")
    dataset, split, views, skipped = _read(
        spec, spec_text, role, cache_root, accelerator, seed, shuffle_buffer, num_workers
    )
    dataset = _standard_columns(dataset, spec_text)
    rows = None if isinstance(dataset, datasets.IterableDataset) else len(dataset)
    entry = {"role": role, "spec": spec_text, "kind": spec.kind, "location": spec.location or None,
             "split": split, "views": views, "rows": rows, "skipped": skipped}
    if record is not None:
        record.append(entry)
    if accelerator.is_main_process:
        logger.info(f"{role} data {spec_text}: {'streamed' if rows is None else rows} rows, split "
                    f"{split or 'none (the source has no splits)'}, views {', '.join(views) if views else 'all'}"
                    f"{f', {skipped} malformed rows skipped' if skipped else ''}")
    return dataset


def load_source(spec_text: str, cache_root, accelerator, seed=0, shuffle_buffer=1000, num_workers=0, role="train",
                record=None):
    """One `--data` source as a Dataset (or, for `wds:`, an IterableDataset) of image/report[/labels]: the split
    that `role` ("train" or "validation") reads, its images decoded when read. `record`, a list, gets a dict of
    what the source gave (role, spec, kind, location, split, views, rows, skipped)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    dataset = _load(spec_text, role, cache_root, accelerator, seed, shuffle_buffer, num_workers, record)
    return decoded_when_read(dataset, cache_root)


def load_training_data(specs, cache_root, accelerator, seed=0, shuffle_buffer=1000, num_workers=0, record=None):
    """All `--data` sources' training splits concatenated (streams only with streams; `labels` kept if all have
    it); `record` as in `load_source`."""
    sources = [
        _load(spec, "train", cache_root, accelerator, seed, shuffle_buffer, num_workers, record) for spec in specs
    ]
    streamed = [isinstance(source, datasets.IterableDataset) for source in sources]
    if any(streamed) and not all(streamed):
        raise UserError(f"--data {specs}: wds: streams cannot be mixed with map-style sources (use one kind)")
    if len(sources) == 1:
        return decoded_when_read(sources[0], cache_root)
    shared = [name for name in KEPT_COLUMNS if all(name in (s.column_names or []) for s in sources)]
    return decoded_when_read(
        datasets.concatenate_datasets([source.select_columns(shared) for source in sources]), cache_root
    )


class DecodeOrReplace:
    """A `datasets` transform that decodes the `image` column of the rows read; a row whose image does not decode
    is replaced by the next row (from a start drawn from the file name, the same on every rank and worker) that
    does, and the file is named in the log and in `unreadable_images.tsv`, once per process."""

    def __init__(self, rows: datasets.Dataset, log_path):
        self.rows, self.log_path = rows, Path(log_path)
        self.feature = datasets.Image()
        self.unreadable = {}  # file -> why, in this process

    @staticmethod
    def _name(value) -> str:
        return str(value.get("path") or "<image bytes>") if isinstance(value, dict) else str(value)

    def _decode(self, value):
        name = self._name(value)
        if name in self.unreadable:
            return None
        try:
            return self.feature.decode_example(value)
        except Exception as error:  # PIL and the OS raise many kinds for a broken file
            why = " ".join(f"{type(error).__name__}: {error}".split())
            self.unreadable[name] = why
            logger.warning(f"skipping the unreadable image {name} ({why}); its row is replaced by another "
                           f"({len(self.unreadable)} skipped in this process; all are listed in {self.log_path})")
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.log_path, "a", encoding="utf-8") as handle:  # one short append: atomic between processes
                handle.write(f"{name}\t{why}\n")
            return None

    def _replacement(self, name: str) -> dict:
        count = len(self.rows)
        start = int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little") % count
        for offset in range(count):
            row = self.rows[(start + offset) % count]
            image = self._decode(row["image"])
            if image is not None:
                return dict(row, image=image)
        raise RuntimeError(f"no image of the data set decodes (see {self.log_path})")

    def __call__(self, batch: dict) -> dict:
        if "image" not in batch:
            return batch
        for index, value in enumerate(batch["image"]):
            image = self._decode(value)
            if image is None:
                row = self._replacement(self._name(value))
                for column in batch:
                    batch[column][index] = row[column]
            else:
                batch["image"][index] = image
        return batch


def decoded_when_read(dataset, cache_root):
    """`dataset` with its images decoded (or replaced, see DecodeOrReplace) as rows are read; streams as they are."""
    if isinstance(dataset, datasets.IterableDataset):
        return dataset
    rows = dataset.cast_column("image", datasets.Image(decode=False))
    return rows.with_transform(DecodeOrReplace(rows, Path(cache_root) / UNREADABLE_IMAGES_FILE))


def default_validation_spec(train_specs, validation_size: int):
    """For SynthCXR training data: fresh studies (another seed) at the training size; for MIMIC-CXR: its validate
    split, with the training source's other options."""
    for text in train_specs:
        spec = parse_data_spec(text)
        if spec.kind == "synthcxr":
            options = spec.options
            return f"synthcxr:n={validation_size},size={options['size']},seed={options['seed'] + 100003}"
        if spec.kind == "mimic-cxr":
            options = {"split": "validate", **{k: v for k, v in spec.options.items() if k != "split"}}
            query = "&".join(f"{k}={','.join(v) if isinstance(v, list) else v}" for k, v in options.items())
            return f"mimic-cxr:{spec.location}?{query}"
    return None


__all__ = [
    "check_pretraining_spec",
    "decoded_when_read",
    "default_validation_spec",
    "load_source",
    "load_training_data",
    "source_split",
    "source_views",
    "synthcxr_dataset",
]
