"""Readers for the real data set layouts, each returning a `datasets.Dataset` (or, with
`streaming=True`, an `IterableDataset` with the same rows) with an `Image` feature and typed columns.

Every reader skips malformed rows, counts them by reason and warns naming the row
(`MalformedRowWarning`); `strict=True` raises ValueError instead; the counts are in
`ds.info.description` and in a `RowIssues` passed as `issues=` (see `row_issues`).
`check_images=True` (default) decodes each image once (map-style: up front; streaming: as its row
comes) so that no epoch crashes on a corrupt file; `check_images=False` only checks that files
exist (see `dataset_building`). `write_webdataset` converts any of these data sets to tar shards.
"""

from .chexpert_csv import load_chexpert
from .general_domain import load_coco_captions, load_flickr30k, load_image_folder
from .image_text_pairs import load_image_text_pairs
from .mimic_cxr import load_mimic_cxr
from .openi import load_openi
from .row_issues import MalformedRowWarning, RowIssues
from .vqa_sets import load_slake, load_vqa_rad
from .webdataset_shards import load_webdataset, write_webdataset

__all__ = [
    "MalformedRowWarning",
    "RowIssues",
    "load_chexpert",
    "load_coco_captions",
    "load_flickr30k",
    "load_image_folder",
    "load_image_text_pairs",
    "load_mimic_cxr",
    "load_openi",
    "load_slake",
    "load_vqa_rad",
    "load_webdataset",
    "write_webdataset",
]
