import csv
import io
import json
import pickle
import tarfile

import datasets
import pytest
import torch
from PIL import Image
from readers_fixtures import comparable, rows_of, write_corrupt_image, write_image

from processing.readers import (
    MalformedRowWarning,
    RowIssues,
    load_image_text_pairs,
    load_webdataset,
    write_webdataset,
)

TEXTS = [f"Study {i}: no acute cardiopulmonary process." for i in range(7)]


@pytest.fixture
def pairs_dir(tmp_path):
    for i in range(len(TEXTS)):
        write_image(tmp_path / "images" / f"{i:04d}.png", 30 * i, mode="L" if i % 2 else "RGB")
    write_corrupt_image(tmp_path / "images" / "corrupt.png")
    records = [{"image": f"images/{i:04d}.png", "text": text} for i, text in enumerate(TEXTS)]
    bad = [
        {"image": "images/absent.png", "text": "missing image"},
        {"image": "images/0000.png", "text": "  "},
        {"image": "images/corrupt.png", "text": "unreadable"},
    ]
    lines = [json.dumps(r) for r in records[:3] + bad + records[3:]]
    lines.insert(4, "{not json")
    (tmp_path / "pairs.jsonl").write_text("\n".join(lines) + "\n")
    with open(tmp_path / "pairs.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "caption"])
        writer.writerows([[r["image"], r["text"]] for r in records + bad])
    return tmp_path


def test_jsonl_and_csv_pairs_with_counted_skips(pairs_dir):
    issues = RowIssues()
    with pytest.warns(MalformedRowWarning, match="pairs.jsonl line 5"):
        from_jsonl = load_image_text_pairs(pairs_dir / "pairs.jsonl", issues=issues)
    assert from_jsonl["text"] == TEXTS
    assert dict(issues.counts) == {
        "missing image": 1,
        "empty text": 1,
        "unreadable image": 1,
        "unparsable JSON line": 1,
    }
    assert from_jsonl[1]["image"].mode == "L" and from_jsonl[0]["image"].mode == "RGB"
    with pytest.warns(MalformedRowWarning):
        from_csv = load_image_text_pairs(pairs_dir / "pairs.csv", image_column="file", text_column="caption")
    assert rows_of(from_csv) == rows_of(from_jsonl)
    with pytest.raises(ValueError, match="missing column"):
        load_image_text_pairs(pairs_dir / "pairs.csv")
    with pytest.raises(ValueError, match="malformed row"):
        load_image_text_pairs(pairs_dir / "pairs.jsonl", strict=True)
    with pytest.warns(MalformedRowWarning):
        unchecked = load_image_text_pairs(pairs_dir / "pairs.jsonl", check_images=False, issues=(fast := RowIssues()))
    assert len(unchecked) == len(TEXTS) + 1 and "unreadable image" not in fast.counts  # decoding it would raise
    with pytest.warns(MalformedRowWarning):
        streamed = load_image_text_pairs(pairs_dir / "pairs.jsonl", streaming=True)
    with pytest.warns(MalformedRowWarning, match="corrupt.png"):
        assert rows_of(streamed) == rows_of(from_jsonl)


@pytest.fixture
def pairs(pairs_dir):
    with pytest.warns(MalformedRowWarning):
        return load_image_text_pairs(pairs_dir / "pairs.jsonl")


def test_webdataset_round_trip_streaming_equals_map_style(pairs, tmp_path):
    shards = write_webdataset(pairs, tmp_path / "shards", shard_size=3)
    assert [s.rsplit("/", 1)[1] for s in shards] == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    assert write_webdataset(pairs, tmp_path / "again", shard_size=3)  # same data, same bytes:
    assert (tmp_path / "again/shard-000001.tar").read_bytes() == (tmp_path / "shards/shard-000001.tar").read_bytes()

    streamed = pickle.loads(pickle.dumps(load_webdataset(tmp_path / "shards")))  # as into DataLoader workers
    assert isinstance(streamed, datasets.IterableDataset)
    mapped = load_webdataset(tmp_path / "shards", streaming=False)
    assert isinstance(mapped, datasets.Dataset)
    streamed_rows = rows_of(streamed)
    assert streamed_rows == rows_of(mapped)
    original = rows_of(pairs)
    assert [{"image": r["image"], "text": r["text"]} for r in streamed_rows] == original
    assert streamed_rows[4]["key"] == "000000004" and streamed_rows[4]["url"].endswith("shard-000001.tar")
    pattern = str(tmp_path / "shards" / "shard-{000000..000001}.tar")
    assert [r["text"] for r in load_webdataset(pattern)] == TEXTS[:6]


def test_webdataset_shuffle_buffer_and_resumption(pairs, tmp_path):
    write_webdataset(pairs, tmp_path / "shards", shard_size=3)
    shuffled = [r["text"] for r in load_webdataset(tmp_path / "shards", shuffle_buffer=4, seed=3)]
    assert sorted(shuffled) == sorted(TEXTS) and shuffled != TEXTS
    assert [r["text"] for r in load_webdataset(tmp_path / "shards", shuffle_buffer=4, seed=3)] == shuffled

    first = load_webdataset(tmp_path / "shards")
    iterator, seen = iter(first), []
    for _ in range(4):
        seen.append(next(iterator)["text"])
    state = first.state_dict()
    resumed = load_webdataset(tmp_path / "shards")
    resumed.load_state_dict(state)
    assert seen + [r["text"] for r in resumed] == TEXTS
    assert [r["text"] for r in load_webdataset(tmp_path / "shards").skip(5)] == TEXTS[5:]


def _add(archive, name, payload):
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    archive.addfile(info, io.BytesIO(payload))


def test_webdataset_malformed_samples_are_counted_while_streaming(pairs, tmp_path):
    write_webdataset(pairs.select(range(2)), tmp_path / "shards", shard_size=2)
    image_bytes = (tmp_path / "images/0003.png").read_bytes()
    with tarfile.open(tmp_path / "shards" / "shard-000001.tar", "w") as archive:
        _add(archive, "a.png", image_bytes)  # no text
        _add(archive, "b.txt", b"no image")
        _add(archive, "c.jpg", b"not a jpeg")
        _add(archive, "c.txt", b"corrupt image")
        _add(archive, "d.png", image_bytes)
        _add(archive, "d.json", json.dumps({"caption": "from the json"}).encode())
    good = (tmp_path / "shards" / "shard-000000.tar").read_bytes()
    (tmp_path / "shards" / "shard-000002.tar").write_bytes(good[: len(good) // 2])  # truncated shard

    issues = RowIssues()
    with pytest.warns(MalformedRowWarning) as caught:
        texts = [r["text"] for r in load_webdataset(tmp_path / "shards", issues=issues)]
    assert texts[:2] == TEXTS[:2] and texts[2] == "from the json"
    assert issues.counts["empty text"] == 1 and issues.counts["missing image"] == 1
    assert issues.counts["unreadable image"] == 1 and issues.counts["corrupt shard"] == 1
    assert "shard-000001.tar key c" in " ".join(str(w.message) for w in caught)
    with pytest.raises(ValueError, match="malformed row"):
        list(load_webdataset(tmp_path / "shards", strict=True))


def test_write_webdataset_keeps_metadata_in_json(tmp_path):
    write_image(tmp_path / "x.jpg", 60)
    features = datasets.Features(
        {"image": datasets.Image(), "report": datasets.Value("string"), "study_id": datasets.Value("int64")}
    )
    ds = datasets.Dataset.from_dict(
        {"image": [str(tmp_path / "x.jpg")], "report": ["Normal."], "study_id": [5]}, features=features
    )
    write_webdataset(ds, tmp_path / "shards")
    row = next(iter(load_webdataset(tmp_path / "shards")))
    assert row["text"] == "Normal." and json.loads(row["json"]) == {"study_id": 5}
    assert comparable(row)["image"] == comparable(ds[0])["image"]  # JPEG bytes stored as is, not re-encoded
    with tarfile.open(tmp_path / "shards" / "shard-000000.tar") as archive:
        assert archive.getnames() == ["000000000.jpg", "000000000.txt", "000000000.json"]
    with pytest.raises(ValueError, match="text_column"):
        write_webdataset(ds, tmp_path / "other", text_column="caption")


def test_write_webdataset_reencodes_formats_it_cannot_read_back(tmp_path):
    image_path = write_image(tmp_path / "x.png", 80)
    bmp_path = tmp_path / "x.bmp"
    Image.open(image_path).save(bmp_path)
    ds = datasets.Dataset.from_dict(
        {"image": [str(bmp_path)], "text": ["Bitmap."]},
        features=datasets.Features({"image": datasets.Image(), "text": datasets.Value("string")}),
    )
    write_webdataset(ds, tmp_path / "shards")
    with tarfile.open(tmp_path / "shards" / "shard-000000.tar") as archive:
        assert archive.getnames()[0] == "000000000.png"
    row = next(iter(load_webdataset(tmp_path / "shards")))
    assert comparable(row)["image"] == comparable(ds[0])["image"]


def test_webdataset_rows_and_skips_through_the_datasets_builder(pairs, tmp_path):
    """Shards read through datasets' WebDataset builder give the rows and counted skips that the former
    hand-written tar parser gave on the same shards (the expected values below are that reader's output)."""
    write_webdataset(pairs, tmp_path / "shards", shard_size=4)
    image_bytes = (tmp_path / "images/0005.png").read_bytes()
    with tarfile.open(tmp_path / "shards" / "shard-000002.tar", "w") as archive:
        _add(archive, "w.png", image_bytes)
        _add(archive, "w.cls", b"3")  # a member no column reads: ignored
        _add(archive, "w.txt", b"  with a class member  ")
        _add(archive, "x.jpg", b"\xff\xd8 not a jpeg")
        _add(archive, "x.txt", b"corrupt image")
        _add(archive, "y.png", image_bytes)
        _add(archive, "z.txt", b"no image")
        _add(archive, "v.webp", (tmp_path / "images/0005.png").read_bytes())  # PNG bytes named .webp: still read
        _add(archive, "v.json", json.dumps({"report": "from the json", "view": "PA"}).encode())
    whole = (tmp_path / "shards" / "shard-000000.tar").read_bytes()
    (tmp_path / "shards" / "shard-000003.tar").write_bytes(whole[:700])  # cut inside the first image

    issues = RowIssues()
    with pytest.warns(MalformedRowWarning):
        rows = rows_of(load_webdataset(tmp_path / "shards", issues=issues))
    assert [(r["key"], r["url"].rsplit("/", 1)[1], r["text"], r["json"]) for r in rows] == [
        *[(f"{i:09d}", f"shard-00000{i // 4}.tar", TEXTS[i], "{}") for i in range(7)],
        ("w", "shard-000002.tar", "with a class member", ""),
        ("v", "shard-000002.tar", "from the json", '{"report": "from the json", "view": "PA"}'),
    ]
    assert [r["image"] for r in rows[:7]] == [r["image"] for r in rows_of(pairs)]
    assert rows[7]["image"] == rows[8]["image"] == rows[5]["image"]
    assert issues.records[:3] == [
        ("shard-000002.tar key x", "unreadable image", issues.records[0][2]),
        ("shard-000002.tar key y", "empty text", "no txt member or JSON text/caption/report"),
        ("shard-000002.tar key z", "missing image", "no jpg/jpeg/png/webp member (has ['txt'])"),
    ]
    # "after key": the last whole sample read (the former parser named the one it was reading).
    assert issues.records[3] == (
        "shard-000003.tar after key None", "corrupt shard", "ReadError: unexpected end of data"
    )
    with pytest.warns(MalformedRowWarning):
        assert rows_of(load_webdataset(tmp_path / "shards", streaming=False)) == rows


def test_webdataset_shard_cut_at_a_member_boundary_is_counted(pairs, tmp_path):
    """tarfile reads such a shard without error; its last sample, which may have lost members, is dropped."""
    write_webdataset(pairs.select(range(2)), tmp_path / "shards")
    whole = (tmp_path / "shards" / "shard-000000.tar").read_bytes()
    with tarfile.open(tmp_path / "shards" / "shard-000000.tar") as archive:
        second = archive.getmember("000000001.png").offset  # the header of the second sample's first member
    (tmp_path / "shards" / "shard-000000.tar").write_bytes(whole[:second])
    issues = RowIssues()
    with pytest.warns(MalformedRowWarning, match="corrupt shard"):
        assert list(load_webdataset(tmp_path / "shards", issues=issues)) == []
    assert issues.records[0][:2] == ("shard-000000.tar after key 000000000", "corrupt shard")


def test_webdataset_dataloader_workers_read_every_shard(pairs, tmp_path):
    """Each worker reads its tars whole: the builder's stream of one tar is not split again among workers."""
    write_webdataset(pairs, tmp_path / "shards", shard_size=2)
    loader = torch.utils.data.DataLoader(
        load_webdataset(tmp_path / "shards"), batch_size=None, num_workers=2, collate_fn=dict
    )
    assert sorted(row["text"] for row in loader) == sorted(TEXTS)


@pytest.mark.parametrize("member, payload", [("b.json", b"{not json"), ("b.txt", b"\xff\xfe not UTF-8")])
def test_webdataset_sample_the_builder_cannot_decode_ends_its_shard(pairs, tmp_path, member, payload):
    image_bytes = (tmp_path / "images/0003.png").read_bytes()
    (tmp_path / "shards").mkdir()
    with tarfile.open(tmp_path / "shards" / "shard-000000.tar", "w") as archive:
        for key in "abc":
            _add(archive, f"{key}.png", image_bytes)
            _add(archive, member if key == "b" else f"{key}.txt", payload if key == "b" else b"fine")
    issues = RowIssues()
    with pytest.warns(MalformedRowWarning, match="shard-000000.tar after key a: corrupt shard"):
        assert [r["key"] for r in load_webdataset(tmp_path / "shards", issues=issues)] == ["a"]
    assert dict(issues.counts) == {"corrupt shard": 1}
