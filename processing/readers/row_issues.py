"""Malformed rows: skip, count, warn (naming the row), or raise in strict mode.

Every reader takes `strict=False` and `issues=None`. A malformed row (missing or unreadable image,
empty report, a label outside {1, 0, -1, blank}, ...) is skipped, counted under its reason and
warned about with `MalformedRowWarning` naming the file and row. With `strict=True` the first
malformed row raises `ValueError` instead. The caller inspects the outcome through

- `ds.info.description`: a one-paragraph summary (rows kept, skips by reason), always set;
- a `RowIssues` passed as `issues=`: the reader fills it (`.counts`, `.records`); for a streaming
  data set, image problems found while iterating are added as they are met (in the iterating
  process: with DataLoader workers, each worker warns for its own rows).
"""

import logging
import warnings
from collections import Counter
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

# Past this many warnings in one reader call, rows are still counted and recorded but only logged.
MAX_WARNINGS = 20


class MalformedRowWarning(UserWarning):
    """A data set row was skipped because it is malformed."""


@dataclass
class RowIssues:
    """The skipped rows of one reader call: `counts` (reason → n) and `records` ((where, reason, detail))."""

    strict: bool = False
    counts: Counter = field(default_factory=Counter)
    records: list = field(default_factory=list)
    rows_kept: int = 0

    @property
    def skipped(self) -> int:
        return sum(self.counts.values())

    def skip(self, where: str, reason: str, detail: str = "") -> None:
        """Record a malformed row; raises ValueError instead when strict."""
        message = f"{where}: {reason}" + (f" ({detail})" if detail else "")
        if self.strict:
            raise ValueError(f"malformed row (strict=True): {message}")
        self.counts[reason] += 1
        self.records.append((where, reason, detail))
        if len(self.records) <= MAX_WARNINGS:
            warnings.warn(f"skipping {message}", MalformedRowWarning, stacklevel=3)
        elif len(self.records) == MAX_WARNINGS + 1:
            warnings.warn(
                "more malformed rows skipped; the rest are only logged (see the summary / RowIssues.records)",
                MalformedRowWarning,
                stacklevel=3,
            )
        logger.info("skipping %s", message)

    def summary(self, reader: str, rows_noun: str = "rows kept") -> str:
        reasons = ", ".join(f"{reason}: {n}" for reason, n in sorted(self.counts.items()))
        text = f"{reader}: {self.rows_kept} {rows_noun}, {self.skipped} malformed rows skipped"
        return text + (f" ({reasons})." if reasons else ".")


__all__ = ["MalformedRowWarning", "RowIssues"]
