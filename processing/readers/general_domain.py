"""General-domain evaluation sets that CLIP-style runs monitor.

- ImageNet-style class folders (`root/<class>/<image>`) for zero-shot classification;
- COCO captions (`annotations/captions_val2017.json`: images [{id, file_name}], annotations
  [{image_id, caption}]) and Flickr30k in Karpathy's split JSON (`dataset_flickr30k.json`: images
  [{filename, imgid, split, sentences [{raw, tokens}]}]) for image–text retrieval: one row per
  image with all its captions.
"""

import json
import os
from pathlib import Path

import datasets

from .dataset_building import build_dataset
from .row_issues import RowIssues

FOLDER_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")

CAPTION_FEATURES = datasets.Features(
    {
        "image": datasets.Image(),
        "captions": datasets.Sequence(datasets.Value("string")),
        "image_id": datasets.Value("int64"),
        "file_name": datasets.Value("string"),
        "split": datasets.Value("string"),
    }
)


def load_image_folder(
    root,
    *,
    class_names: dict | None = None,
    streaming: bool = False,
    check_images: bool = True,
    strict: bool = False,
    issues: RowIssues | None = None,
):
    """Read `root/<class folder>/<image>` into rows image, label (a ClassLabel), file_name.

    Label names are the folder names, sorted (or `class_names[folder]`, e.g. ImageNet's WordNet
    ids → readable names). Files whose suffix is not an image suffix are not data and are ignored;
    unreadable images are skipped and counted (see row_issues).
    """
    root = Path(root)
    folders = sorted(entry.name for entry in os.scandir(root) if entry.is_dir() and not entry.name.startswith("."))
    if not folders:
        raise FileNotFoundError(f"image folder: no class folders in {root}")
    names = [class_names.get(folder, folder) for folder in folders] if class_names else folders
    if len(set(names)) != len(names):
        raise ValueError(f"image folder: class names are not unique: {names}")
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=names), "file_name": datasets.Value("string")}
    )
    issues = issues if issues is not None else RowIssues()
    issues.strict = strict
    rows = []
    for label, folder in enumerate(folders):
        for path in sorted((root / folder).rglob("*")):
            if path.is_file() and path.suffix.lower() in FOLDER_IMAGE_SUFFIXES and not path.name.startswith("."):
                relative = str(path.relative_to(root))
                rows.append((relative, {"image": str(path), "label": label, "file_name": relative}))
    return build_dataset(
        rows, features, reader="load_image_folder", issues=issues, streaming=streaming, check_images=check_images
    )


def _load_json(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"no {path}")
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ValueError(f"{path}: expected a JSON object with an 'images' list")
    return data


def _caption_row(where, image_path, captions, image_id, file_name, split, issues):
    captions = [caption.strip() for caption in captions if isinstance(caption, str) and caption.strip()]
    if not os.path.isfile(image_path):
        issues.skip(where, "missing image", str(image_path))
        return None
    if not captions:
        issues.skip(where, "no captions")
        return None
    row = {"image": str(image_path), "captions": captions, "image_id": image_id, "file_name": file_name, "split": split}
    return where, row


def load_coco_captions(
    annotations_json,
    images_dir,
    *,
    streaming: bool = False,
    check_images: bool = True,
    strict: bool = False,
    issues: RowIssues | None = None,
):
    """Read a COCO captions file (e.g. captions_val2017.json) with its image folder.

    Rows: image, captions (all of the image's captions, in annotation order), image_id, file_name,
    split (the file's stem, e.g. "captions_val2017"). Images without captions, captions of unknown
    images and missing/unreadable images are skipped and counted (see row_issues).
    """
    annotations_json, images_dir = Path(annotations_json), Path(images_dir)
    data = _load_json(annotations_json)
    issues = issues if issues is not None else RowIssues()
    issues.strict = strict
    captions_of = {image["id"]: [] for image in data["images"] if isinstance(image, dict) and "id" in image}
    for index, annotation in enumerate(data.get("annotations", [])):
        image_id = annotation.get("image_id") if isinstance(annotation, dict) else None
        if image_id not in captions_of:
            issues.skip(f"{annotations_json.name} annotation {index}", "caption of unknown image_id", repr(image_id))
            continue
        captions_of[image_id].append(annotation.get("caption"))
    rows = []
    for index, image in enumerate(data["images"]):
        where = f"{annotations_json.name} image {index}"
        if not isinstance(image, dict) or "id" not in image or not image.get("file_name"):
            issues.skip(where, "malformed entry", "an image needs 'id' and 'file_name'")
            continue
        where = f"{where} (id={image['id']}, {image['file_name']})"
        row = _caption_row(
            where, images_dir / image["file_name"], captions_of[image["id"]], int(image["id"]),
            image["file_name"], annotations_json.stem, issues,
        )  # fmt: skip
        if row is not None:
            rows.append(row)
    return build_dataset(
        rows, CAPTION_FEATURES, reader="load_coco_captions", issues=issues,
        streaming=streaming, check_images=check_images,
    )  # fmt: skip


def load_flickr30k(
    karpathy_json,
    images_dir,
    split: str | None = "test",
    *,
    streaming: bool = False,
    check_images: bool = True,
    strict: bool = False,
    issues: RowIssues | None = None,
):
    """Read Karpathy's split JSON (dataset_flickr30k.json; dataset_coco.json works too, its
    `filepath` joined) with its image folder. split: "train", "val", "test", "restval" or None.

    Rows: image, captions (the `raw` sentences), image_id (imgid), file_name, split. Entries
    without sentences and missing/unreadable images are skipped and counted (see row_issues).
    """
    karpathy_json, images_dir = Path(karpathy_json), Path(images_dir)
    data = _load_json(karpathy_json)
    issues = issues if issues is not None else RowIssues()
    issues.strict = strict
    rows = []
    for index, image in enumerate(data["images"]):
        where = f"{karpathy_json.name} image {index}"
        if not isinstance(image, dict) or not image.get("filename"):
            issues.skip(where, "malformed entry", "an image needs 'filename'")
            continue
        if split is not None and image.get("split") != split:
            continue
        file_name = str(Path(image.get("filepath", "")) / image["filename"])
        where = f"{where} ({file_name})"
        captions = [sentence.get("raw") for sentence in image.get("sentences", []) if isinstance(sentence, dict)]
        row = _caption_row(
            where, images_dir / file_name, captions, int(image.get("imgid", index)), file_name,
            image.get("split", ""), issues,
        )  # fmt: skip
        if row is not None:
            rows.append(row)
    return build_dataset(
        rows, CAPTION_FEATURES, reader="load_flickr30k", issues=issues, streaming=streaming, check_images=check_images
    )


__all__ = ["CAPTION_FEATURES", "load_coco_captions", "load_flickr30k", "load_image_folder"]
