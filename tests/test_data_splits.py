"""Pretraining `--data` sources read the official splits and frontal views by default, take the reader's options in
the spec (`mimic-cxr:/path?split=train&view=PA,AP`), say what each source gave in the log and run_config.yaml, and
leave image checks to the moment a row is read (a corrupt image is then skipped, counted and named)."""

import csv
import json
import shutil

import datasets
import pytest
import yaml
from accelerate import PartialState
from readers_fixtures import write_image

from processing.synthcxr import write_synthcxr
from train import pretrain, pretrain_setup
from train.data_loading import parse_data_spec
from train.data_sources import default_validation_spec, load_source, load_training_data, source_split, source_views
from train.run_config import parse_pretrain_args
from train.user_errors import UserError

STUDIES = 80


@pytest.fixture(scope="module")
def mimic(tmp_path_factory):
    """SynthCXR in the MIMIC-CXR-JPG layout, with a lateral image added to every study (same split)."""
    out = tmp_path_factory.mktemp("synth")
    folder = write_synthcxr(out, STUDIES, size=32, seed=0, layouts=("mimic-cxr-jpg",), progress=False)["mimic-cxr-jpg"]
    truth = [json.loads(line) for line in (out / "synthcxr.jsonl").read_text().splitlines()]
    for table in ("metadata", "split"):
        path = folder / f"mimic-cxr-2.0.0-{table}.csv"
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
        with open(path, "a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\n")
            for row in rows:
                lateral = dict(row, dicom_id=row["dicom_id"] + "-lat")
                if table == "metadata":
                    lateral["ViewPosition"] = "LATERAL"
                    study = folder / "files" / f"p{row['subject_id'][:2]}" / f"p{row['subject_id']}" / f"s{row['study_id']}"
                    shutil.copy(study / f"{row['dicom_id']}.jpg", study / f"{lateral['dicom_id']}.jpg")
                writer.writerow(lateral)
    counts = {split: sum(study["split"] == split for study in truth) for split in ("train", "validate", "test")}
    assert min(counts.values()) >= 2, counts
    return folder, truth, counts


def test_mimic_training_source_is_the_train_split_frontal_views(mimic, tmp_path):
    folder, _, counts = mimic
    record = []
    dataset = load_source(f"mimic-cxr:{folder}", tmp_path, PartialState(), record=record)
    assert len(dataset) == counts["train"]
    assert record == [{"role": "train", "spec": f"mimic-cxr:{folder}", "kind": "mimic-cxr", "location": str(folder),
                       "split": "train", "views": ["PA", "AP"], "rows": counts["train"], "skipped": 0}]
    validation = load_source(f"mimic-cxr:{folder}", tmp_path, PartialState(), role="validation")
    assert len(validation) == counts["validate"]


def test_spec_options_choose_split_and_views(mimic, tmp_path):
    folder, _, counts = mimic
    state = PartialState()
    assert len(load_source(f"mimic-cxr:{folder}?view=all", tmp_path, state)) == 2 * counts["train"]
    assert len(load_source(f"mimic-cxr:{folder}?split=validate&view=LATERAL", tmp_path, state)) == counts["validate"]
    record = []
    load_source(f"mimic-cxr:{folder}?split=validate&view=frontal", tmp_path, state, record=record)
    assert record[0]["split"] == "validate" and record[0]["rows"] == counts["validate"]


def test_default_validation_of_mimic_training_is_its_validate_split(mimic):
    folder, _, _ = mimic
    assert default_validation_spec([f"mimic-cxr:{folder}"], 256) == f"mimic-cxr:{folder}?split=validate"
    assert default_validation_spec([f"mimic-cxr:{folder}?view=PA"], 256) == f"mimic-cxr:{folder}?split=validate&view=PA"
    assert default_validation_spec(["synthcxr:n=10,size=16,seed=1"], 5) == "synthcxr:n=5,size=16,seed=100004"


def test_saved_and_chexpert_sources_give_each_role_its_split(tmp_path):
    def rows(split, count):
        images = [str(write_image(tmp_path / f"{split}{i}.png", shade=10 * i)) for i in range(count)]
        return datasets.Dataset.from_dict({"image": images, "report": [f"{split} {i}" for i in range(count)]},
                                          features=datasets.Features({"image": datasets.Image(),
                                                                      "report": datasets.Value("string")}))

    datasets.DatasetDict({"train": rows("train", 3), "validation": rows("validation", 2)}).save_to_disk(tmp_path / "dd")
    record = []
    validation = load_source(f"saved:{tmp_path / 'dd'}", tmp_path, PartialState(), role="validation", record=record)
    assert list(validation["report"]) == ["validation 0", "validation 1"] and record[0]["split"] == "validation"
    assert len(load_source(f"saved:{tmp_path / 'dd'}", tmp_path, PartialState())) == 3

    chexpert = parse_data_spec("chexpert:/data/CheXpert-v1.0-small")
    assert (source_split(chexpert, "train"), source_split(chexpert, "validation")) == ("train", "valid")
    assert source_views(chexpert) == ["PA", "AP"]
    assert source_split(parse_data_spec("chexpert:/data?split=validate"), "train") == "valid"
    assert source_views(parse_data_spec("chexpert:/data?view=all")) is None


def test_spec_forms_parse_and_existing_ones_keep_working():
    spec = parse_data_spec("mimic-cxr:/data/mimic?split=train&view=PA,AP")
    assert (spec.kind, spec.location, spec.options) == ("mimic-cxr", "/data/mimic", {"split": "train", "view": ["PA", "AP"]})
    assert parse_data_spec("mimic-cxr:/data/mimic").options == {}
    assert parse_data_spec("synthcxr:n=20,size=32").options == {"n": 20, "size": 32, "seed": 0}
    assert parse_data_spec("saved:/runs/set?split=validation").options == {"split": "validation"}
    assert parse_data_spec("wds:/shards/part-0?.tar").location == "/shards/part-0?.tar"  # a glob, not options


@pytest.mark.parametrize("spec, named", [
    ("mimic-cxr:/data?splt=train", ["split", "view", "per", "sections"]),
    ("chexpert:/data?sections=full", ["split", "view"]),
    ("pairs:/x.jsonl?split=train", ["image_column", "text_column"]),
    ("mimic-cxr:/data?split", ["key=value"]),
    ("mimic-cxr:/data?split=dev", ["train", "validate"]),
])
def test_unknown_or_malformed_options_are_user_errors_naming_the_valid_ones(spec, named):
    with pytest.raises(UserError) as error:
        parse_data_spec(spec)
    assert all(name in str(error.value) for name in named), str(error.value)


def test_test_split_is_refused_in_pretraining(mimic, tmp_path):
    folder, _, _ = mimic
    for flag in ("--data", "--validation_data"):
        argv = ["--data", "synthcxr:n=8", flag, f"mimic-cxr:{folder}?split=test", "--output_dir", str(tmp_path)]
        with pytest.raises(UserError, match="test split"):
            parse_pretrain_args(argv)


def test_loading_decodes_no_image_and_a_corrupt_one_is_skipped_when_read(mimic, tmp_path, monkeypatch, caplog):
    import processing.readers.dataset_building as building

    folder, truth, counts = mimic
    copy = tmp_path / "mimic"
    shutil.copytree(folder, copy)
    bad = next(study for study in truth if study["split"] == "train")
    subject = str(bad["subject_id"])
    bad_path = copy / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{bad['study_id']}" / f"{bad['dicom_id']}.jpg"
    bad_path.write_bytes(b"not a jpeg")

    def no_decoding(value):
        raise AssertionError("an image was decoded while loading the data set")

    monkeypatch.setattr(building, "image_problem", no_decoding)
    dataset = load_training_data([f"mimic-cxr:{copy}"], tmp_path / "cache", PartialState())
    assert len(dataset) == counts["train"]
    rows = [dataset[index] for index in range(len(dataset))]
    assert all(row["image"].size == (32, 32) for row in rows)  # the corrupt image's row was replaced by another
    batch = dataset[0 : len(dataset)]
    assert len(batch["image"]) == len(batch["report"]) == counts["train"]
    assert sum(bad_path.name in record.getMessage() for record in caplog.records) == 1  # named once
    skipped = (tmp_path / "cache" / "unreadable_images.tsv").read_text().splitlines()
    assert len(skipped) == 1 and skipped[0].startswith(str(bad_path))


def test_bar_mimic_layout_pretrains_on_train_rows_and_validates_on_validate_rows(mimic, tmp_path, monkeypatch):
    folder, _, counts = mimic
    tokenizer_rows = []
    original = pretrain_setup.train_clinical_tokenizer

    def counting(texts, **kwargs):
        tokenizer_rows.append(len(texts))
        return original(texts, **kwargs)

    monkeypatch.setattr(pretrain_setup, "train_clinical_tokenizer", counting)
    output = tmp_path / "run"
    summary = pretrain.main([
        "--data", f"mimic-cxr:{folder}", "--output_dir", str(output), "--per_device_batch_size", "8",
        "--max_steps", "2", "--eval_steps", "2", "--save_steps", "0", "--num_workers", "0",
        "--max_text_length", "64", "--tokenizer_vocab_size", "400", "--report_to", "none",
    ])
    assert summary["steps"] == 2 and summary["final_eval"]["validation_rows"] == counts["validate"]
    resolved = yaml.safe_load((output / "run_config.yaml").read_text())["resolved"]
    train, validation = resolved["data_sources"]
    assert (train["role"], train["split"], train["views"], train["rows"]) == ("train", "train", ["PA", "AP"], counts["train"])
    assert (validation["role"], validation["split"], validation["rows"]) == ("validation", "validate", counts["validate"])
    assert resolved["train_rows"] == counts["train"]
    assert tokenizer_rows == [counts["train"]]
