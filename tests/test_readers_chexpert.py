import csv
import pickle

import datasets
import pytest
from readers_fixtures import rows_of, write_corrupt_image, write_image

from processing.chexpert import CHEXPERT_LABELS
from processing.readers import MalformedRowWarning, RowIssues, load_chexpert

HEADER = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA"] + CHEXPERT_LABELS

# (relative path under the data set folder, frontal/lateral, AP/PA, image kind, label overrides)
TRAIN = [
    ("train/patient00001/study1/view1_frontal.jpg", "Frontal", "AP", "ok", {"Cardiomegaly": "1.0", "Edema": "-1.0"}),
    ("train/patient00001/study1/view2_lateral.jpg", "Lateral", "", "ok", {"Edema": "-1.0"}),
    ("train/patient00002/study1/view1_frontal.jpg", "Frontal", "PA", "ok", {"No Finding": "1.0", "Edema": "0.0"}),
    ("train/patient00003/study1/view1_frontal.jpg", "Frontal", "PA", "missing", {}),
    ("train/patient00004/study2/view1_frontal.jpg", "Frontal", "AP", "corrupt", {}),
    ("train/patient00005/study1/view1_frontal.jpg", "Frontal", "AP", "ok", {"Edema": "yes"}),
]


def write_chexpert(parent):
    root = parent / "CheXpert-v1.0-small"
    rows = []
    for shade, (relative, frontal_lateral, ap_pa, kind, overrides) in enumerate(TRAIN):
        if kind == "ok":
            write_image(root / relative, shade * 40)
        elif kind == "corrupt":
            write_corrupt_image(root / relative)
        labels = [overrides.get(name, "") for name in CHEXPERT_LABELS]
        rows.append([f"CheXpert-v1.0-small/{relative}", "Female", str(60 + shade), frontal_lateral, ap_pa] + labels)
    rows.append(["CheXpert-v1.0-small/train/patient00006/study1/view1_frontal.jpg", "Male"])  # short row
    with open(root / "train.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([HEADER] + rows)
    write_image(root / "valid/patient64541/study1/view1_frontal.jpg", 7)
    with open(root / "valid.csv", "w", newline="") as handle:
        valid_row = ["CheXpert-v1.0-small/valid/patient64541/study1/view1_frontal.jpg", "Male", "73", "Frontal", "AP"]
        csv.writer(handle).writerows([HEADER, valid_row + ["1.0"] + ["0.0"] * 13])
    return root


@pytest.fixture
def chexpert_root(tmp_path):
    return write_chexpert(tmp_path)


def test_rows_and_counted_skips(chexpert_root):
    issues = RowIssues()
    with pytest.warns(MalformedRowWarning, match="train.csv line 5"):
        ds = load_chexpert(chexpert_root, issues=issues)
    assert ds["patient_id"] == ["patient00001", "patient00001", "patient00002"]
    assert dict(issues.counts) == {
        "missing image": 1,
        "unreadable image": 1,
        "label outside {1, 0, -1, blank}": 1,
        "malformed CSV row": 1,
    }
    first = ds[0]
    assert first["view"] == "AP" and first["frontal_lateral"] == "Frontal" and first["ap_pa"] == "AP"
    assert first["study_id"] == "patient00001/study1" and first["age"] == 60 and first["sex"] == "Female"
    assert first["labels"]["Cardiomegaly"] == 1 and first["labels"]["Edema"] == -1
    assert first["labels"]["Fracture"] is None
    assert ds[1]["view"] == "LATERAL"
    assert first["image"].size == (12, 10)
    with pytest.warns(MalformedRowWarning):
        assert load_chexpert(chexpert_root.parent / "CheXpert-v1.0-small")["split"] == ["train"] * 3
    valid = load_chexpert(chexpert_root, split="valid")
    assert len(valid) == 1 and valid[0]["labels"]["No Finding"] == 1 and valid[0]["split"] == "valid"


@pytest.mark.parametrize("policy, expected", [("keep", -1), ("ones", 1), ("zeros", 0), ("ignore", None)])
def test_uncertainty_policies(chexpert_root, policy, expected):
    with pytest.warns(MalformedRowWarning):
        ds = load_chexpert(chexpert_root, uncertainty=policy)
    assert [labels["Edema"] for labels in ds["labels"]] == [expected, expected, 0]
    assert ds[0]["labels"]["Cardiomegaly"] == 1


def test_view_filter(chexpert_root):
    with pytest.warns(MalformedRowWarning):
        assert load_chexpert(chexpert_root, view="lateral")["view"] == ["LATERAL"]
    with pytest.warns(MalformedRowWarning):
        assert load_chexpert(chexpert_root, view="frontal")["view"] == ["AP", "PA"]
    with pytest.warns(MalformedRowWarning):
        assert load_chexpert(chexpert_root, view=["PA"])["patient_id"] == ["patient00002"]


def test_strict_and_bad_arguments(chexpert_root):
    with pytest.raises(ValueError, match=r"train.csv line 5 .*missing image"):
        load_chexpert(chexpert_root, strict=True)
    with pytest.raises(ValueError, match="uncertainty"):
        load_chexpert(chexpert_root, uncertainty="maybe")
    with pytest.raises(FileNotFoundError):
        load_chexpert(chexpert_root.parent)


def test_streaming_gives_the_same_rows(chexpert_root):
    with pytest.warns(MalformedRowWarning):
        mapped = load_chexpert(chexpert_root, uncertainty="ignore")
    with pytest.warns(MalformedRowWarning):
        streamed = load_chexpert(chexpert_root, uncertainty="ignore", streaming=True)
    assert isinstance(streamed, datasets.IterableDataset)
    streamed = pickle.loads(pickle.dumps(streamed))  # as into spawned DataLoader workers
    with pytest.warns(MalformedRowWarning, match="unreadable image"):
        assert rows_of(streamed) == rows_of(mapped)
