"""Turn a reader's parsed rows into a `datasets.Dataset` or a streaming `IterableDataset`.

Readers parse their index files (CSV, JSON, XML) into rows whose `image` is a file path (or
`{"path", "bytes"}` for images held in archives); this module checks the images and builds the
data set with the reader's explicit `Features`.

Image checking (`check_images=True`, the default) decodes every image once with
`read_medical_image`, so that a corrupt file is skipped and counted instead of raising when a
training loop reaches it:
- map-style: all images up front (threads, with a progress bar), before the data set exists;
- streaming: each image just before its row is yielded, so a streaming epoch never crashes on
  a bad file (at the price of decoding twice: once to check, once in the `Image` feature).
`check_images=False` keeps only the cheap existence check: fast on very large sets, but a
corrupt file then raises when its row is decoded.

Map-style data sets are built in memory (`Dataset.from_dict`): a row holds paths and text, images
stay on disk and decode on access. Nothing is cached on disk, so a changed folder is never served
stale; re-reading the index files costs seconds even for MIMIC-CXR's 377k images.
"""

import os
from concurrent.futures import ThreadPoolExecutor

import datasets
from tqdm.auto import tqdm

from ..image_io_medvl import MedicalImageError, read_medical_image
from .row_issues import RowIssues

# Rows per generator shard of a streaming data set: the unit of DataLoader worker splitting,
# shard shuffling and resumption (`IterableDataset.state_dict`).
STREAMING_SHARD_ROWS = 256


def image_problem(value) -> str | None:
    """Why the image `value` (a path, or {"path", "bytes"}) cannot be decoded, or None if it can."""
    if isinstance(value, dict):
        source = value["bytes"] if value.get("bytes") is not None else value["path"]
    else:
        source = value
    try:
        read_medical_image(source)
    except MedicalImageError as error:
        return str(error)
    return None


def build_dataset(rows, features, *, reader, issues: RowIssues, streaming=False, check_images=True):
    """`rows`: list of (where, row) with `where` naming the row for warnings; returns the data set."""
    if streaming:
        return _build_streaming(rows, features, reader=reader, issues=issues, check_images=check_images)
    if check_images and rows:
        with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) + 2)) as pool:
            problems = list(
                tqdm(
                    pool.map(lambda item: image_problem(item[1]["image"]), rows),
                    total=len(rows),
                    desc=f"{reader}: checking images",
                    disable=len(rows) < 1000,
                )
            )
        kept = []
        for (where, row), problem in zip(rows, problems):
            if problem is None:
                kept.append(row)
            else:
                issues.skip(where, "unreadable image", problem)
    else:
        kept = [row for _, row in rows]
    issues.rows_kept = len(kept)
    columns = {name: [row[name] for row in kept] for name in features}  # explicit columns: works for 0 rows
    dataset = datasets.Dataset.from_dict(columns, features=features)
    dataset.info.description = issues.summary(reader)
    return dataset


def decodable_rows(items, issues: RowIssues, check_images: bool):
    """Yield the rows of (where, row) `items` whose image decodes; the others are skipped and counted."""
    for where, row in items:
        problem = image_problem(row["image"]) if check_images else None
        if problem is not None:
            issues.skip(where, "unreadable image", problem)
            continue
        yield row


def _generate_rows(shards, issues, check_images):
    # Module level (not a closure) so that the data set pickles into spawned DataLoader workers.
    for shard in shards:
        yield from decodable_rows(shard, issues, check_images)


def _build_streaming(rows, features, *, reader, issues, check_images):
    shards = [rows[start : start + STREAMING_SHARD_ROWS] for start in range(0, len(rows), STREAMING_SHARD_ROWS)]
    dataset = datasets.IterableDataset.from_generator(
        _generate_rows,
        features=features,
        gen_kwargs={"shards": shards or [[]], "issues": issues, "check_images": check_images},
    )
    issues.rows_kept = len(rows)
    dataset.info.description = (
        issues.summary(reader, rows_noun="rows indexed")
        + " Streaming: unreadable images are skipped and counted while iterating."
    )
    return dataset


__all__ = ["STREAMING_SHARD_ROWS", "build_dataset", "decodable_rows", "image_problem"]
