import json

import datasets
import pytest
from readers_fixtures import rows_of, write_corrupt_image, write_image

from processing.readers import (
    MalformedRowWarning,
    RowIssues,
    load_coco_captions,
    load_flickr30k,
    load_image_folder,
)


def test_image_folder_classes_are_folder_names(tmp_path):
    root = tmp_path / "val"
    write_image(root / "n01440764" / "a.JPEG", 10)
    write_image(root / "n01440764" / "b.png", 20)
    write_image(root / "n02102040" / "nested" / "c.jpg", 30)
    write_corrupt_image(root / "n02102040" / "d.jpg")
    (root / "n02102040" / "notes.txt").write_text("not an image")
    (root / "n03000134").mkdir()  # a class without images keeps its label index
    issues = RowIssues()
    with pytest.warns(MalformedRowWarning, match=r"n02102040/d.jpg"):
        ds = load_image_folder(root, issues=issues)
    assert ds.features["label"].names == ["n01440764", "n02102040", "n03000134"]
    assert ds["label"] == [0, 0, 1]
    assert ds["file_name"] == ["n01440764/a.JPEG", "n01440764/b.png", "n02102040/nested/c.jpg"]
    assert dict(issues.counts) == {"unreadable image": 1}
    names = {"n01440764": "tench", "n02102040": "English springer", "n03000134": "chain-link fence"}
    with pytest.warns(MalformedRowWarning):
        named = load_image_folder(root, class_names=names)
    assert named.features["label"].int2str(named[2]["label"]) == "English springer"
    streamed = load_image_folder(root, streaming=True)  # the corrupt image is met while iterating
    with pytest.warns(MalformedRowWarning, match=r"n02102040/d.jpg"):
        assert rows_of(streamed) == rows_of(ds)


def test_coco_captions_one_row_per_image(tmp_path):
    images = tmp_path / "val2017"
    write_image(images / "000000000139.jpg", 10, mode="RGB")
    write_image(images / "000000000285.jpg", 20, mode="RGB")
    write_image(images / "000000000632.jpg", 30, mode="RGB")
    annotations = {
        "info": {"description": "COCO 2017 Dataset"},
        "licenses": [],
        "images": [
            {"id": 139, "file_name": "000000000139.jpg", "height": 10, "width": 12},
            {"id": 285, "file_name": "000000000285.jpg", "height": 10, "width": 12},
            {"id": 632, "file_name": "000000000632.jpg", "height": 10, "width": 12},  # no captions
            {"id": 724, "file_name": "000000000724.jpg", "height": 10, "width": 12},  # missing file
        ],
        "annotations": [
            {"image_id": 139, "id": 1, "caption": "A woman stands in the dining area at the table. "},
            {"image_id": 285, "id": 2, "caption": "A big brown bear standing in the grass."},
            {"image_id": 139, "id": 3, "caption": "A room with chairs, a table, and a woman in it."},
            {"image_id": 724, "id": 4, "caption": "A stop sign."},
            {"image_id": 999, "id": 5, "caption": "Caption of no image."},
        ],
    }
    path = tmp_path / "annotations" / "captions_val2017.json"
    path.parent.mkdir()
    path.write_text(json.dumps(annotations))
    issues = RowIssues()
    with pytest.warns(MalformedRowWarning, match="id=632"):
        ds = load_coco_captions(path, images, issues=issues)
    assert ds["image_id"] == [139, 285]
    assert ds[0]["captions"] == [
        "A woman stands in the dining area at the table.",
        "A room with chairs, a table, and a woman in it.",
    ]
    assert ds[0]["image"].mode == "RGB" and ds[0]["split"] == "captions_val2017"
    assert dict(issues.counts) == {"no captions": 1, "missing image": 1, "caption of unknown image_id": 1}
    with pytest.raises(ValueError, match="caption of unknown image_id"):
        load_coco_captions(path, images, strict=True)


def test_flickr30k_karpathy_split(tmp_path):
    images = tmp_path / "flickr30k-images"
    entries = []
    for i, split in enumerate(["train", "test", "test", "val", "test"]):
        name = f"{1000092795 + i}.jpg"
        if i != 4:
            write_image(images / name, 40 * i, mode="RGB")
        sentences = [{"tokens": ["a", "dog"], "raw": f"A dog runs {i}.", "imgid": i, "sentid": 5 * i + k} for k in range(2)]
        entries.append({"sentids": [5 * i, 5 * i + 1], "imgid": i, "sentences": sentences if i != 2 else [],
                        "split": split, "filename": name})  # fmt: skip
    path = tmp_path / "dataset_flickr30k.json"
    path.write_text(json.dumps({"images": entries, "dataset": "flickr30k"}))
    issues = RowIssues()
    with pytest.warns(MalformedRowWarning):
        test = load_flickr30k(path, images, issues=issues)
    assert test["image_id"] == [1]
    assert test[0]["captions"] == ["A dog runs 1.", "A dog runs 1."] and test[0]["split"] == "test"
    assert dict(issues.counts) == {"no captions": 1, "missing image": 1}
    assert load_flickr30k(path, images, split="train")["file_name"] == ["1000092795.jpg"]
    with pytest.warns(MalformedRowWarning):
        everything = load_flickr30k(path, images, split=None)
    assert everything["split"] == ["train", "test", "val"]
    streamed = load_flickr30k(path, images, split="val", streaming=True)
    assert isinstance(streamed, datasets.IterableDataset)
    assert rows_of(streamed) == rows_of(load_flickr30k(path, images, split="val"))
