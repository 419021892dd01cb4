import csv
import gzip
import shutil
import warnings

import datasets
import pytest
from readers_fixtures import comparable, rows_of, write_corrupt_image, write_image

from processing.chexpert import CHEXPERT_LABELS
from processing.readers import MalformedRowWarning, RowIssues, load_mimic_cxr

REPORT = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___ with cough.

 FINDINGS:

 The heart is enlarged.  Mild
 interstitial edema cannot be excluded.

 IMPRESSION:

 Cardiomegaly.  Possible mild edema.
"""
IMPRESSION_ONLY = "FINAL REPORT\n IMPRESSION: No acute cardiopulmonary process.\n"
NORMAL = "FINDINGS: Lungs are clear. No pleural effusion.\nIMPRESSION: Normal chest."

# (subject, study, dicom, view, split, image kind, report, label overrides)
STUDIES = [
    ("10000032", "50414267", "a1", "PA", "train", "ok", REPORT, {"Cardiomegaly": "1.0", "Edema": "-1.0"}),
    ("10000032", "50414267", "a2", "LATERAL", "train", "ok", REPORT, None),
    ("10000032", "53189527", "b1", "AP", "train", "ok", IMPRESSION_ONLY, {"No Finding": "1.0"}),
    ("10000764", "56699142", "c1", "PA", "test", "ok", NORMAL, {"Pleural Effusion": "0.0"}),
    ("10000764", "57375967", "d1", "PA", "validate", "missing", NORMAL, {}),
    ("10000898", "58000001", "e1", "PA", "train", "corrupt", NORMAL, {}),
    ("10000898", "58000002", "f1", "PA", "train", "ok", "   \n", {}),
    ("10000898", "58000003", "g1", "PA", "train", "ok", NORMAL, {"Edema": "2.0"}),
]


def _write_csv(path, header, rows, gz):
    opener = gzip.open if gz else open
    with opener(str(path) + (".gz" if gz else ""), "wt", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def write_mimic(root, gz=False):
    metadata, splits, labels = [], [], {}
    for shade, (subject, study, dicom, view, split, kind, report, overrides) in enumerate(STUDIES):
        study_dir = root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}"
        if kind == "ok":
            write_image(study_dir / f"{dicom}.jpg", shade * 30)
        elif kind == "corrupt":
            write_corrupt_image(study_dir / f"{dicom}.jpg")
        (study_dir.parent / f"s{study}.txt").write_text(report)
        metadata.append([dicom, subject, study, "CHEST (PA AND LAT)", view, 10, 12, 21800506, 213014.531])
        splits.append([dicom, study, subject, split])
        if overrides is not None:
            labels[study] = [subject, study] + [overrides.get(name, "") for name in CHEXPERT_LABELS]
    _write_csv(
        root / "mimic-cxr-2.0.0-metadata.csv",
        ["dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition", "Rows",
         "Columns", "StudyDate", "StudyTime"],
        metadata, gz,
    )  # fmt: skip
    _write_csv(root / "mimic-cxr-2.0.0-split.csv", ["dicom_id", "study_id", "subject_id", "split"], splits, gz)
    # The real file lists labels alphabetically; the reader goes by column name.
    order = sorted(CHEXPERT_LABELS)
    rows = [[r[0], r[1]] + [r[2 + CHEXPERT_LABELS.index(name)] for name in order] for r in labels.values()]
    _write_csv(root / "mimic-cxr-2.0.0-chexpert.csv", ["subject_id", "study_id"] + order, rows, gz)
    return root


@pytest.fixture
def mimic_root(tmp_path):
    return write_mimic(tmp_path / "mimic-cxr-jpg")


@pytest.mark.parametrize("gz", [False, True])
def test_rows_labels_reports_and_counted_skips(tmp_path, gz):
    root = write_mimic(tmp_path / "mimic", gz=gz)
    issues = RowIssues()
    with pytest.warns(MalformedRowWarning) as caught:
        ds = load_mimic_cxr(root, issues=issues)
    assert isinstance(ds, datasets.Dataset)
    assert isinstance(ds.features["image"], datasets.Image)
    assert ds["dicom_id"] == ["a1", "a2", "b1", "c1"]
    assert dict(issues.counts) == {
        "missing image": 1,
        "unreadable image": 1,
        "empty report": 1,
        "label outside {1, 0, -1, blank}": 1,
    }
    messages = " ".join(str(w.message) for w in caught)
    for dicom in ("d1", "e1", "f1", "g1"):
        assert f"dicom_id={dicom}" in messages
    assert "4 rows kept, 4 malformed rows skipped" in ds.info.description
    first = ds[0]
    assert first["report"] == (
        "FINDINGS: The heart is enlarged. Mild interstitial edema cannot be excluded.\n"
        "IMPRESSION: Cardiomegaly. Possible mild edema."
    )
    assert set(first["labels"]) == set(CHEXPERT_LABELS)
    assert first["labels"]["Cardiomegaly"] == 1 and first["labels"]["Edema"] == -1
    assert first["labels"]["Pneumothorax"] is None
    assert first["view"] == "PA" and first["subject_id"] == 10000032 and first["study_id"] == 50414267
    assert first["split"] == "train"
    assert first["image"].size == (12, 10) and first["image"].getpixel((1, 1)) == pytest.approx(0, abs=3)
    assert ds[2]["report"] == "IMPRESSION: No acute cardiopulmonary process."
    assert ds[3]["labels"]["Pleural Effusion"] == 0


def test_split_and_view_filters(mimic_root):
    load = lambda **kw: load_mimic_cxr(mimic_root, **kw)["dicom_id"]  # noqa: E731
    with pytest.warns(MalformedRowWarning):
        assert load(split="train", view="PA") == ["a1"]
        assert load(view=["AP", "lateral"]) == ["a2", "b1"]
        assert load(view="frontal", split="test") == ["c1"]
    with pytest.raises(ValueError, match="split"):
        load_mimic_cxr(mimic_root, split="dev")


def test_one_row_per_study_picks_the_frontal_image(mimic_root):
    with pytest.warns(MalformedRowWarning):
        ds = load_mimic_cxr(mimic_root, per="study")
    assert ds["study_id"] == [50414267, 53189527, 56699142]
    assert ds[0]["dicom_id"] == "a1" and ds[0]["view"] == "PA"
    assert [p.rsplit("/", 1)[1] for p in ds[0]["image_paths"]] == ["a1.jpg", "a2.jpg"]
    with warnings.catch_warnings():  # the malformed rows are all PA: filtered out before any check
        warnings.simplefilter("error", MalformedRowWarning)
        lateral_only = load_mimic_cxr(mimic_root, per="study", view="LATERAL")
    assert lateral_only["dicom_id"] == ["a2"]


def test_sections_and_uncertainty_policies(mimic_root):
    with pytest.warns(MalformedRowWarning):
        findings = load_mimic_cxr(mimic_root, sections="findings", issues=(issues := RowIssues()))
    assert findings["dicom_id"] == ["a1", "a2", "c1"]  # b1's report has no FINDINGS
    assert issues.counts["report lacks findings"] == 1
    assert findings[2]["report"] == "Lungs are clear. No pleural effusion."
    with pytest.warns(MalformedRowWarning):
        full = load_mimic_cxr(mimic_root, sections="full", uncertainty="ones")
    assert full[0]["report"].startswith("FINAL REPORT\nEXAMINATION:")
    assert full[0]["labels"]["Edema"] == 1
    with pytest.warns(MalformedRowWarning):
        assert load_mimic_cxr(mimic_root, uncertainty="zeros")[0]["labels"]["Edema"] == 0
        assert load_mimic_cxr(mimic_root, uncertainty="ignore")[0]["labels"]["Edema"] is None
    with pytest.raises(ValueError, match="sections"):
        load_mimic_cxr(mimic_root, sections="summary")


def test_separate_reports_root(mimic_root, tmp_path):
    reports = tmp_path / "mimic-cxr-reports"
    for report in (mimic_root / "files").rglob("s*.txt"):
        target = reports / report.relative_to(mimic_root)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(report, target)
    with pytest.warns(MalformedRowWarning):
        ds = load_mimic_cxr(mimic_root, reports_root=reports)
    assert ds["dicom_id"] == ["a1", "a2", "b1", "c1"]
    with pytest.warns(MalformedRowWarning):
        without = load_mimic_cxr(mimic_root, issues=(issues := RowIssues()))
    assert len(without) == 0 and issues.counts["missing report"] == 6


def test_strict_raises_naming_the_row(mimic_root):
    with pytest.raises(ValueError, match=r"dicom_id=d1.*missing image"):
        load_mimic_cxr(mimic_root, strict=True)


def test_streaming_gives_the_same_rows_and_counts_bad_images_while_iterating(mimic_root):
    with pytest.warns(MalformedRowWarning):
        mapped = load_mimic_cxr(mimic_root, per="study")
    issues = RowIssues()
    with pytest.warns(MalformedRowWarning):
        streamed = load_mimic_cxr(mimic_root, per="study", streaming=True, issues=issues)
    assert isinstance(streamed, datasets.IterableDataset)
    assert streamed.features == mapped.features
    assert "unreadable image" not in issues.counts  # images are checked when iterated
    with pytest.warns(MalformedRowWarning, match="dicom_id=e1"):
        streamed_rows = rows_of(streamed)
    assert streamed_rows == [comparable(mapped[i]) for i in range(len(mapped))]
    assert issues.counts["unreadable image"] == 1


def test_missing_metadata_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="metadata"):
        load_mimic_cxr(tmp_path)
