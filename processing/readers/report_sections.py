"""Pick the FINDINGS / IMPRESSION sections out of a free-text radiology report.

MIMIC-CXR reports are plain text with headers ("FINDINGS:", "IMPRESSION:"); Open-I reports
arrive already split by section. Both go through `compose_report`, so `sections=` means the same
for every reader:
    "findings+impression"  "FINDINGS: <findings>\\nIMPRESSION: <impression>" (either may be absent)
    "findings" / "impression"  that section's text alone
    "full"                  the whole report, blank lines dropped
A report lacking the requested section(s) gives None (the reader skips and counts the row).
"""

from ..clinical_text_medvl import extract_sections

SECTION_CHOICES = ("findings+impression", "findings", "impression", "full")


def _squash(text: str) -> str:
    return " ".join(text.split())


def check_sections(sections: str) -> None:
    if sections not in SECTION_CHOICES:
        raise ValueError(f"sections must be one of {SECTION_CHOICES}, got {sections!r}")


def compose_report(findings: str, impression: str, full_text: str, sections: str) -> str | None:
    """The report text that `sections` asks for, or None if that part is empty."""
    findings, impression = _squash(findings or ""), _squash(impression or "")
    if sections == "full":
        lines = [line.strip() for line in (full_text or "").splitlines()]
        text = "\n".join(line for line in lines if line)
    elif sections == "findings":
        text = findings
    elif sections == "impression":
        text = impression
    else:
        parts = [f"FINDINGS: {findings}" if findings else "", f"IMPRESSION: {impression}" if impression else ""]
        text = "\n".join(part for part in parts if part)
    return text or None


def report_text(text: str, sections: str) -> str | None:
    """The `sections` of a free-text report (MIMIC-CXR style headers, found by the clinical
    text normaliser's `extract_sections`, so aliases such as "CONCLUSION:" count as impression)."""
    found = extract_sections(text)
    return compose_report(found.get("findings", ""), found.get("impression", ""), text, sections)


__all__ = ["SECTION_CHOICES", "check_sections", "compose_report", "report_text"]
