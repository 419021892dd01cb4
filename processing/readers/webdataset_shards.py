"""WebDataset tar shards: image–text samples for data sets too large for one disk.

A shard is a plain (uncompressed) tar file whose members are grouped into samples by key (the member path up to
the first dot of its file name): `000123.jpg` + `000123.txt` [+ `000123.json`] is one sample.
The tars are read and grouped into samples by datasets' packaged WebDataset builder (`load_dataset("webdataset")`,
one shard at a time so that a bad shard ends alone); brace ranges are expanded here, as its data files take globs.
`load_webdataset` streams shards (one generator shard per tar file, so DataLoader workers split
them), with an optional shuffle buffer and a resumable position; `write_webdataset` converts any
data set with an `image` column into shards.

Resuming: `state = ds.state_dict()` while iterating, later `ds.load_state_dict(state)` on a data
set built with the same arguments continues after the last yielded sample (datasets'
IterableDataset checkpointing; with a shuffle buffer the samples that sat in the buffer are not
replayed). `ds.skip(k)` starts after the first k samples instead.
"""

import glob
import io
import json
import re
import tarfile
from pathlib import Path

import datasets
from PIL import Image
from tqdm.auto import tqdm

from .dataset_building import build_dataset, decodable_rows
from .row_issues import RowIssues

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
JSON_TEXT_KEYS = ("text", "caption", "report")
WEBDATASET_FEATURES = datasets.Features(
    {
        "image": datasets.Image(),
        "text": datasets.Value("string"),
        "json": datasets.Value("string"),
        "key": datasets.Value("string"),
        "url": datasets.Value("string"),
    }
)
# The members rows are made of, typed so that datasets' WebDataset builder neither infers the columns from the
# first samples (it refuses shards whose samples differ, as malformed ones do) nor decodes images; other members
# are dropped.
_MEMBER_FEATURES = datasets.Features(
    {
        "__key__": datasets.Value("string"),
        **{extension: datasets.Image(decode=False) for extension in IMAGE_EXTENSIONS},
        "txt": datasets.Value("string"),
        "json": datasets.Json(),
    }
)
_RANGE = re.compile(r"\{(\d+)\.\.(\d+)\}")


def _expand_ranges(pattern: str) -> list:
    """Expand WebDataset's numeric brace ranges: "shard-{000..002}.tar" → three names."""
    match = _RANGE.search(pattern)
    if match is None:
        return [pattern]
    start, stop = match.group(1), match.group(2)
    width = len(start) if start.startswith("0") else 0
    names = []
    for number in range(int(start), int(stop) + 1):
        names.extend(_expand_ranges(pattern[: match.start()] + str(number).zfill(width) + pattern[match.end() :]))
    return names


def resolve_shards(source) -> list:
    """A folder (its *.tar), a glob or brace-range pattern, or a list of paths → sorted shard paths."""
    if isinstance(source, (list, tuple)):
        shards = [str(path) for path in source]
    elif Path(source).is_dir():
        shards = sorted(str(path) for path in Path(source).glob("*.tar"))
    else:
        expanded = _expand_ranges(str(source))
        shards = [name for pattern in expanded for name in (sorted(glob.glob(pattern)) or [pattern])]
    missing = [shard for shard in shards if not Path(shard).is_file()]
    if not shards or missing:
        detail = f" (missing: {missing[:5]})" if missing else ""
        raise FileNotFoundError(f"WebDataset: no shard files for {source!r}{detail}")
    return shards


def _ends_cleanly(shard: str) -> bool:
    """Whether the shard ends in a zero block (tar's end-of-archive marker): a shard cut at a member boundary
    reads, through tarfile's stream mode, as a shorter shard without error, so only its end tells."""
    with open(shard, "rb") as handle:
        handle.seek(0, 2)
        if handle.tell() < tarfile.BLOCKSIZE:
            return False
        handle.seek(-tarfile.BLOCKSIZE, 2)
        return not handle.read().strip(b"\0")


def _samples_of_shard(shard: str, issues):
    """Yield the samples of one shard as datasets' WebDataset builder groups them (members `<key>.<field>`, one
    dict per key, `.txt` decoded, `.json` parsed, images as bytes). An error ends the shard and is counted: a
    corrupt or truncated tar, and also a sample the builder cannot decode (unparsable JSON, text not UTF-8, a
    member twice), since the builder raises on it and its stream cannot go on past it."""
    stream = datasets.load_dataset(
        "webdataset", data_files={"train": [shard]}, split="train", streaming=True, features=_MEMBER_FEATURES
    )
    # The builder yields a sample once the next one starts or the tar ends: the last one is held back until the
    # end is known clean, since a shard cut at a member boundary may have lost that sample's later members.
    held, problem, keep_held = None, None, True
    try:
        # `iter`, not `for sample in stream`: in a DataLoader worker the latter would give this one-shard stream
        # to worker 0 only. Batches of one, so that an error loses no sample read before it.
        for batch in stream.iter(batch_size=1):
            if held is not None:
                yield held
            held = {name: values[0] for name, values in batch.items()}
    except (tarfile.TarError, ValueError, OSError, EOFError) as error:
        problem = f"{type(error).__name__}: {error}"
    else:
        if not _ends_cleanly(shard):
            problem, keep_held = "ReadError: no end-of-archive marker (truncated)", False
    if held is not None and keep_held:
        yield held
    if problem is not None:
        key = held["__key__"] if held is not None else None
        issues.skip(f"{Path(shard).name} after key {key}", "corrupt shard", problem)


def _sample_rows(shard: str, issues):
    """Yield (where, row) for each well-formed sample of a shard."""
    for sample in _samples_of_shard(shard, issues):
        key = sample["__key__"]
        where = f"{Path(shard).name} key {key}"
        extension = next((ext for ext in IMAGE_EXTENSIONS if sample[ext] is not None), None)
        if extension is None:
            present = sorted(name for name, value in sample.items() if value is not None and name != "__key__")
            issues.skip(where, "missing image", f"no {'/'.join(IMAGE_EXTENSIONS)} member (has {present})")
            continue
        parsed = sample["json"]
        text = (sample["txt"] or "").strip()
        if not text and isinstance(parsed, dict):
            text = next((str(parsed[k]).strip() for k in JSON_TEXT_KEYS if parsed.get(k)), "")
        if not text:
            issues.skip(where, "empty text", "no txt member or JSON text/caption/report")
            continue
        metadata = "" if parsed is None else json.dumps(parsed, ensure_ascii=False)
        image = {"path": f"{key}.{extension}", "bytes": sample[extension]["bytes"]}
        yield where, {"image": image, "text": text, "json": metadata, "key": key, "url": shard}


def _generate_shard_rows(shards, issues, check_images):
    # Module level (not a closure) so that the data set pickles into spawned DataLoader workers.
    for shard in shards:
        yield from decodable_rows(_sample_rows(shard, issues), issues, check_images)


def load_webdataset(
    source,
    *,
    streaming: bool = True,
    shuffle_buffer: int = 0,
    seed: int = 0,
    check_images: bool = True,
    strict: bool = False,
    issues: RowIssues | None = None,
):
    """Read WebDataset tar shards: rows image, text (the .txt member, else the JSON's
    text/caption/report), json (the .json member as a string, "" if none), key, url (shard path).

    source: a folder of *.tar, a glob ("shards/*.tar"), a brace range ("shard-{000000..000099}.tar")
    or a list of paths. streaming=True (default) gives an IterableDataset reading shards lazily;
    shuffle_buffer > 0 shuffles shard order and samples through a buffer of that size, seeded.
    streaming=False reads every shard into an in-memory Dataset (same rows, same order).
    Malformed samples (no image, unreadable image, empty text) are skipped and counted (see
    row_issues); a corrupt or truncated tar, or a sample that datasets' builder cannot decode
    (unparsable JSON, text not UTF-8), ends its shard there, counted as "corrupt shard". In
    streaming they are met, and counted, while iterating.
    """
    shards = resolve_shards(source)
    issues = issues if issues is not None else RowIssues()
    issues.strict = strict
    if not streaming:
        rows = [item for shard in shards for item in _sample_rows(shard, issues)]
        dataset = build_dataset(
            rows, WEBDATASET_FEATURES, reader="load_webdataset", issues=issues, check_images=check_images
        )
        return dataset.shuffle(seed=seed) if shuffle_buffer else dataset

    dataset = datasets.IterableDataset.from_generator(
        _generate_shard_rows,
        features=WEBDATASET_FEATURES,
        gen_kwargs={"shards": shards, "issues": issues, "check_images": check_images},
    )
    dataset.info.description = (
        f"load_webdataset: {len(shards)} shards; malformed samples are skipped and counted while iterating."
    )
    if shuffle_buffer:
        dataset = dataset.shuffle(seed=seed, buffer_size=shuffle_buffer)
    return dataset


def _image_bytes(value) -> tuple:
    """(bytes, extension) of an undecoded `Image` value: the stored bytes when their format is one
    `load_webdataset` reads (JPEG, PNG, WebP), else the image re-encoded losslessly as PNG."""
    data = value.get("bytes")
    if data is None:
        data = Path(value["path"]).read_bytes()
    with Image.open(io.BytesIO(data)) as image:
        extension = {"jpeg": "jpg", "mpo": "jpg"}.get((image.format or "").lower(), (image.format or "").lower())
        if extension in IMAGE_EXTENSIONS:
            return data, extension
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
    return buffer.getvalue(), "png"


def write_webdataset(dataset, out_dir, shard_size: int = 1000, *, text_column=None, prefix: str = "shard") -> list:
    """Write `dataset` (a Dataset or IterableDataset with an `image` column) as tar shards.

    Each sample is `<key>.<jpg|png|...>` (the image's stored bytes, not re-encoded), `<key>.txt`
    (`text_column`; default "report", else "text") and `<key>.json` (every other non-image column).
    Shards are `out_dir/<prefix>-000000.tar`, ... with `shard_size` samples each; returns their paths.
    Tar headers carry no time or owner, so the same data set gives the same bytes.
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    columns = list(dataset.features)
    if "image" not in columns:
        raise ValueError(f"write_webdataset needs an 'image' column; columns are {columns}")
    if text_column is None:
        text_column = next((name for name in ("report", "text") if name in columns), None)
        if text_column is None:
            raise ValueError(f"no 'report' or 'text' column among {columns}: pass text_column=")
    elif text_column not in columns:
        raise ValueError(f"text_column {text_column!r} is not a column; columns are {columns}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    undecoded = dataset.cast_column("image", datasets.Image(decode=False))
    metadata_columns = [
        name
        for name, feature in dataset.features.items()
        if name != text_column and not isinstance(feature, datasets.Image)
    ]

    shard_paths, archive = [], None
    total = dataset.num_rows if isinstance(dataset, datasets.Dataset) else None
    for index, row in enumerate(tqdm(undecoded, total=total, desc="writing WebDataset shards")):
        if index % shard_size == 0:
            if archive is not None:
                archive.close()
            shard_paths.append(out_dir / f"{prefix}-{len(shard_paths):06d}.tar")
            archive = tarfile.open(shard_paths[-1], "w", format=tarfile.USTAR_FORMAT)
        key = f"{index:09d}"
        image_data, extension = _image_bytes(row["image"])
        metadata = {name: row[name] for name in metadata_columns}
        members = {
            extension: image_data,
            "txt": str(row[text_column] or "").encode("utf-8"),
            "json": json.dumps(metadata, ensure_ascii=False, sort_keys=True).encode("utf-8"),
        }
        for member_extension, payload in members.items():
            info = tarfile.TarInfo(f"{key}.{member_extension}")
            info.size, info.mode = len(payload), 0o644
            archive.addfile(info, io.BytesIO(payload))
    if archive is not None:
        archive.close()
    return [str(path) for path in shard_paths]


__all__ = ["WEBDATASET_FEATURES", "load_webdataset", "resolve_shards", "write_webdataset"]
