"""CSV index files, plain or gzipped (MIMIC-CXR ships `*.csv.gz`), read row by row with line numbers."""

import csv
import gzip
from pathlib import Path


def find_table(root: Path, stem: str) -> Path | None:
    """`root/stem.csv` or `root/stem.csv.gz`, whichever exists (None if neither)."""
    for suffix in (".csv", ".csv.gz"):
        if (root / f"{stem}{suffix}").is_file():
            return root / f"{stem}{suffix}"
    return None


def read_csv_rows(path: Path, required_columns, issues):
    """Yield (where, row dict) for each well-formed row; a row with the wrong field count is skipped.

    A missing required column is a broken file, not a malformed row: ValueError naming the file.
    """
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{path}: empty CSV file (no header)")
        header = [name.strip() for name in header]
        missing = [name for name in required_columns if name not in header]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing}; header is {header}")
        for fields in reader:
            where = f"{path.name} line {reader.line_num}"
            if not fields:
                continue
            if len(fields) != len(header):
                issues.skip(where, "malformed CSV row", f"{len(fields)} fields, header has {len(header)}")
                continue
            yield where, dict(zip(header, fields))


__all__ = ["find_table", "read_csv_rows"]
