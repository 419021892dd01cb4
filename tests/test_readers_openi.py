import datasets
import pytest
from readers_fixtures import rows_of, write_corrupt_image, write_image

from processing.readers import MalformedRowWarning, RowIssues, load_openi


def report_xml(number, findings, impression, images, major=("normal",)):
    abstract = "".join(
        f'<AbstractText Label="{label}">{text}</AbstractText>'
        for label, text in (("COMPARISON", "None."), ("INDICATION", "Cough"), ("FINDINGS", findings),
                            ("IMPRESSION", impression))
    )  # fmt: skip
    parents = "".join(
        f'<parentImage id="{image_id}"><figureId>F{i + 1}</figureId><caption>Xray Chest PA and Lateral</caption>'
        f"<panel type=\"single\"><url>/hadoop/storage/radiology/extract/{image_id}.jpg</url></panel></parentImage>"
        for i, image_id in enumerate(images)
    )
    mesh = "".join(f"<major>{tag}</major>" for tag in major) + "<automatic>opacity</automatic>"
    return (
        f'<?xml version="1.0" encoding="utf-8"?><eCitation><meta type="rr"/><uId id="CXR{number}"/>'
        f'<pmcId id="{number}"/><docSource>CXR</docSource><IUXRId id="{number}"/>'
        f'<MedlineCitation Owner="Indiana University" Status="supplied by publisher"><Article PubModel="Electronic">'
        f"<ArticleTitle>Indiana University Chest X-ray Collection</ArticleTitle><Abstract>{abstract}</Abstract>"
        f"</Article></MedlineCitation><MeSH>{mesh}</MeSH>{parents}</eCitation>"
    )


@pytest.fixture
def openi_root(tmp_path):
    root = tmp_path / "openi"
    reports, images = root / "ecgen-radiology", root / "NLMCXR_png"
    reports.mkdir(parents=True)
    documents = {
        1: ("The heart is normal. No effusion.", "Normal chest.", ["CXR1_1_IM-0001-3001", "CXR1_1_IM-0001-4001"]),
        2: ("Left basilar opacity.", "Pneumonia.", ["CXR2_1_IM-0652-1001", "CXR2_1_IM-0652-2001"]),  # 2nd missing
        3: ("", "", ["CXR3_1_IM-1384-1001"]),  # empty report
        4: ("Clear lungs.", "", ["CXR4_IM-2050-1001"]),  # corrupt image
        10: ("Stable cardiomegaly.", "No acute disease.", []),  # no images
    }
    for number, (findings, impression, image_ids) in documents.items():
        (reports / f"{number}.xml").write_text(report_xml(number, findings, impression, image_ids))
    (reports / "5.xml").write_text("<eCitation><uId id='CXR5'/>")  # truncated XML
    for shade, image_id in enumerate(["CXR1_1_IM-0001-3001", "CXR1_1_IM-0001-4001", "CXR2_1_IM-0652-1001",
                                      "CXR3_1_IM-1384-1001"]):  # fmt: skip
        write_image(images / f"{image_id}.png", 50 * shade)
    write_corrupt_image(images / "CXR4_IM-2050-1001.png")
    return root


def test_rows_per_image_with_tags_and_counted_skips(openi_root):
    issues = RowIssues()
    with pytest.warns(MalformedRowWarning) as caught:
        ds = load_openi(openi_root, issues=issues)
    assert ds["image_id"] == ["CXR1_1_IM-0001-3001", "CXR1_1_IM-0001-4001", "CXR2_1_IM-0652-1001"]
    assert dict(issues.counts) == {
        "missing image": 1,
        "empty report": 1,
        "unreadable image": 1,
        "unparsable XML": 1,
        "no images": 1,
    }
    messages = " ".join(str(w.message) for w in caught)
    assert "2.xml (CXR2, image CXR2_1_IM-0652-2001)" in messages and "5.xml" in messages
    first = ds[0]
    assert first["report"] == "FINDINGS: The heart is normal. No effusion.\nIMPRESSION: Normal chest."
    assert first["report_id"] == "CXR1" and first["mesh_major"] == ["normal"]
    assert first["mesh_automatic"] == ["opacity"] and first["caption"] == "Xray Chest PA and Lateral"
    assert first["image"].mode == "L" and first["image"].size == (12, 10)


def test_rows_per_report_and_sections(openi_root):
    with pytest.warns(MalformedRowWarning):
        ds = load_openi(openi_root, per="report", sections="impression")
    assert ds["report_id"] == ["CXR1", "CXR2"]
    assert ds[0]["image_ids"] == ["CXR1_1_IM-0001-3001", "CXR1_1_IM-0001-4001"]
    assert ds[1]["report"] == "Pneumonia."
    with pytest.warns(MalformedRowWarning):
        full = load_openi(openi_root, sections="full")
    assert full[0]["report"].startswith("COMPARISON: None.\nINDICATION: Cough\nFINDINGS:")


def test_strict_and_streaming(openi_root):
    with pytest.raises(ValueError, match="malformed row"):
        load_openi(openi_root, strict=True)
    with pytest.warns(MalformedRowWarning):
        mapped = load_openi(openi_root)
    with pytest.warns(MalformedRowWarning):
        streamed = load_openi(openi_root, streaming=True)
    assert isinstance(streamed, datasets.IterableDataset)
    with pytest.warns(MalformedRowWarning, match="CXR4"):
        assert rows_of(streamed) == rows_of(mapped)
