"""Open-I / IU X-ray (Indiana University chest X-ray collection).

Layout under `root`:
    ecgen-radiology/1.xml ...   one report per file: <AbstractText Label="FINDINGS">,
                                <AbstractText Label="IMPRESSION">, <MeSH><major>/<automatic>,
                                <parentImage id="CXR1_1_IM-0001-3001"> per image
    NLMCXR_png/CXR1_1_IM-0001-3001.png
`reports_dir` / `images_dir` default to those folders under `root`, or `root` itself when absent.
"""

import xml.etree.ElementTree as ElementTree
from pathlib import Path

import datasets

from .dataset_building import build_dataset
from .report_sections import check_sections, compose_report
from .row_issues import RowIssues

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")

_COMMON_COLUMNS = {
    "image": datasets.Image(),
    "report": datasets.Value("string"),
    "report_id": datasets.Value("string"),
    "image_id": datasets.Value("string"),
    "caption": datasets.Value("string"),
    "mesh_major": datasets.Sequence(datasets.Value("string")),
    "mesh_automatic": datasets.Sequence(datasets.Value("string")),
}
OPENI_IMAGE_FEATURES = datasets.Features(_COMMON_COLUMNS)
OPENI_REPORT_FEATURES = datasets.Features({**_COMMON_COLUMNS, "image_ids": datasets.Sequence(datasets.Value("string"))})


def _text(element) -> str:
    return "".join(element.itertext()).strip() if element is not None else ""


def _subfolder_or_root(root: Path, name: str) -> Path:
    return root / name if (root / name).is_dir() else root


def _find_image(images_dir: Path, image_id: str):
    for suffix in IMAGE_SUFFIXES:
        if (images_dir / f"{image_id}{suffix}").is_file():
            return images_dir / f"{image_id}{suffix}"
    return None


def _parse_report(xml_path: Path):
    """(report_id, {section label: text}, full text, mesh major, mesh automatic, [(image id, caption)])."""
    tree = ElementTree.parse(xml_path).getroot()
    sections = {}
    for abstract in tree.iter("AbstractText"):
        sections[(abstract.get("Label") or "").strip().upper()] = _text(abstract)
    full_text = "\n".join(f"{label}: {text}" for label, text in sections.items() if text)
    uid = tree.find("uId")
    report_id = uid.get("id") if uid is not None and uid.get("id") else xml_path.stem
    mesh = tree.find("MeSH")
    major = [_text(e) for e in mesh.findall("major")] if mesh is not None else []
    automatic = [_text(e) for e in mesh.findall("automatic")] if mesh is not None else []
    images = [(image.get("id", "").strip(), _text(image.find("caption"))) for image in tree.iter("parentImage")]
    return report_id, sections, full_text, major, automatic, images


def load_openi(
    root,
    *,
    per: str = "image",
    sections: str = "findings+impression",
    reports_dir=None,
    images_dir=None,
    streaming: bool = False,
    check_images: bool = True,
    strict: bool = False,
    issues: RowIssues | None = None,
):
    """Read the Open-I XML reports and their images.

    per: "image" (a row per image) or "report" (a row per report: `image` is its first image,
    `image_ids` all of them). sections: as in load_mimic_cxr.
    Rows: image, report, report_id, image_id, caption, mesh_major, mesh_automatic [, image_ids].
    Malformed rows (unparsable XML, no images, missing/unreadable image, empty report) are skipped
    and counted (see row_issues).
    """
    root = Path(root)
    if per not in ("image", "report"):
        raise ValueError(f"per must be 'image' or 'report', got {per!r}")
    check_sections(sections)
    reports_dir = Path(reports_dir) if reports_dir else _subfolder_or_root(root, "ecgen-radiology")
    images_dir = Path(images_dir) if images_dir else _subfolder_or_root(root, "NLMCXR_png")
    xml_paths = sorted(reports_dir.glob("*.xml"), key=lambda p: (len(p.stem), p.stem))
    if not xml_paths:
        raise FileNotFoundError(f"Open-I: no *.xml reports in {reports_dir}")
    issues = issues if issues is not None else RowIssues()
    issues.strict = strict

    rows = []
    for xml_path in xml_paths:
        try:
            report_id, found, full_text, major, automatic, images = _parse_report(xml_path)
        except ElementTree.ParseError as error:
            issues.skip(xml_path.name, "unparsable XML", str(error))
            continue
        report = compose_report(found.get("FINDINGS", ""), found.get("IMPRESSION", ""), full_text, sections)
        if report is None:
            issues.skip(f"{xml_path.name} ({report_id})", "empty report", f"no {sections} text")
            continue
        if not images:
            issues.skip(f"{xml_path.name} ({report_id})", "no images", "no <parentImage>")
            continue
        report_rows = []
        for image_id, caption in images:
            where = f"{xml_path.name} ({report_id}, image {image_id})"
            image_path = _find_image(images_dir, image_id)
            if image_path is None:
                issues.skip(where, "missing image", str(images_dir / f"{image_id}{IMAGE_SUFFIXES[0]}"))
                continue
            row = {
                "image": str(image_path),
                "report": report,
                "report_id": report_id,
                "image_id": image_id,
                "caption": caption,
                "mesh_major": major,
                "mesh_automatic": automatic,
            }
            report_rows.append((where, row))
        if per == "report" and report_rows:
            where, first = report_rows[0]
            report_rows = [(where, {**first, "image_ids": [row["image_id"] for _, row in report_rows]})]
        rows.extend(report_rows)
    features = OPENI_IMAGE_FEATURES if per == "image" else OPENI_REPORT_FEATURES
    return build_dataset(
        rows, features, reader="load_openi", issues=issues, streaming=streaming, check_images=check_images
    )


__all__ = ["OPENI_IMAGE_FEATURES", "OPENI_REPORT_FEATURES", "load_openi"]
