"""De-identification of radiology reports: every protected identifier becomes `DEID_TOKEN`.

Replaced (in this order, so that a longer identifier is taken whole before its parts):

1. MIMIC-CXR's `___` placeholders (two or more underscores);
2. e-mail addresses and URLs;
3. record identifiers after a keyword (MRN, medical record number, accession number, patient ID,
   unit/case/study/order number, ...): the keyword stays, the value goes ("MRN: [DEID]");
4. phone and pager numbers (North-American and "+"-prefixed international digit groups,
   "pager 12345", "ext. 4411");
5. dates: numeric (03/12/2019, 2019-03-12, 3.12.19, 12/2019, "on 3/12"), with month names
   (March 3, 2019; 3rd of March; Mar 2019; 12-Mar-2019), weekdays, and years 1900-2099 alone;
6. times: 10:30, 10:30:15, 9 am, 10.30 p.m., 1430 hours;
7. ages over 89 (HIPAA): "92-year-old" -> "[DEID]-year-old", "age: 95" -> "age: [DEID]";
8. any remaining run of five or more digits and letter-prefixed codes such as "A1234567";
9. names after a title (Dr., Mr., Mrs., Ms., Miss, Prof., Nurse; any case; the title stays),
   after reporting verbs and roles ("discussed with John Smith", "Signed: ...", "Attending: ..."),
   and before a credential ("Jane Doe, RN", "John Smith MD").

Consecutive tokens separated only by spaces or punctuation collapse into one.
Measurements ("1.5 cm", "3-4 mm", "T4-T5") are left alone: the digit patterns require the
separators, lengths or keywords of identifiers.
"""

import re

DEID_TOKEN = "[DEID]"

_MONTH = (
    r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|"
    r"sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?"
)
_DAY = r"(?:[0-3]?\d)(?:st|nd|rd|th)?"
_YEAR = r"(?:19|20)\d{2}|'\d{2}"
_NOT_UNIT = r"(?!\s*(?:cm|mm|ml|cc|mg|kg|%|units?)\b)"
_NAME_WORD = r"(?:[A-Z][A-Za-z'\u2019-]+|[A-Z]\.)"
_NAME = _NAME_WORD + r"(?:\s+" + _NAME_WORD + r"){0,2}"

_ID_KEYWORDS = (
    r"(?:MRN|MR\s*#|med(?:ical)?\s+rec(?:ord)?(?:\s+(?:no\.?|number|#))?|record\s+(?:no\.?|number|#)|"
    r"accession(?:\s+(?:no\.?|number|#))?|acc\s*#|patient\s+id|pt\s+id|unit\s+(?:no\.?|number)|"
    r"case\s+(?:no\.?|number|#)|study\s+(?:id|no\.?|number|#)|order\s+(?:no\.?|number|#)|"
    r"exam\s+(?:no\.?|number|#)|visit\s+(?:no\.?|number|#)|account\s+(?:no\.?|number|#)|ID)"
)



def _keep_keyword(match):
    return match.group(1) + DEID_TOKEN


def _title_replacement(match):
    # "MR"/"MS" only count as titles with a period: "MR" alone is often mitral regurgitation.
    title = match.group(1)
    if title.rstrip() in ("MR", "MS"):
        return match.group(0)
    return title + DEID_TOKEN


def _keep_full_stop(match):
    # "at 9 p.m. Call ..." : the last period of "p.m." also ends the sentence; keep it.
    text, end = match.string, match.end()
    ends_sentence = end == len(text) or text[end:].lstrip()[:1].isupper()
    return DEID_TOKEN + "." if match.group(0).endswith(".") and ends_sentence else DEID_TOKEN


# Gates: a rule runs only when the report has a digit (DIGIT) and/or one of its lowercase cue
# substrings; a cheap `in` test that spares most rules a regex scan of most reports.
DIGIT = "digit"
_MONTH_CUES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_AM_PM_CUES = ("am", "pm", "a.m", "p.m")
# The regex engine takes about 0.1 us a character for most rules, a `str.find` a hundredth of
# that. Exact shortcuts:
# - shapes (ASCII text): strings of which every match holds one, written over the text with each
#   digit as "0" and each capital as "A" ("0:00" for a time): without one in the text, no match.
# - starts: where a match can start. Anchors (ASCII text, where `lower()` keeps positions):
#   lowercase strings at which every match starts; the rule tries a match only there. Or a lead:
#   a match has at most that many characters before its first digit, so the scan starts that far
#   before the text's first digit (in a report, mostly its last sentence).
_SPACE_CHARS = " \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f"  # ASCII characters of the class \s


def _shapes(*patterns, separators=("",)):
    """`patterns` with each "{}" replaced by every one of `separators`, as bytes."""
    return tuple({p.replace("{}", sep).encode() for p in patterns for sep in separators})


# (gate, pattern, replacement, shapes, starts): a gate is DIGIT, a tuple of cues, or (DIGIT,
# cues); shapes as above or None; starts a tuple of anchors, a lead (int) or None. The
# replacement is DEID_TOKEN or a function that may keep a leading group (a keyword or a title).
# Patterns that start at a digit test the character before it with a lookbehind placed after the
# first digit, so that the regex engine can skip to digits quickly.
_RULES = [
    (("_",), r"_{2,}", DEID_TOKEN, None, None),
    (("@",), r"(?i)\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b", DEID_TOKEN, None, None),
    (("http", "www"), r"(?i)\b(?:https?://|www\.)\S+", DEID_TOKEN, None, None),
    (
        DIGIT,
        r"(?i)(\b" + _ID_KEYWORDS + r"\s*[:#]?\s*(?:is\s+)?)[A-Z]{0,4}\d[A-Z0-9-]*",
        _keep_keyword,
        None,
        ("mr", "med", "record", "acc", "patient", "pt", "unit", "case", "study", "order", "exam", "visit", "id"),
    ),
    (
        DIGIT,
        r"(?<![\w.])(?:\+?\d{1,3}[\s.-])?\(?\d{3}\)?[\s.-]?\d{3}[\s.-]\d{4}(?![\w.]?\d)",
        DEID_TOKEN,
        _shapes("000{}0000", separators=_SPACE_CHARS + ".-"),
        1,
    ),
    ((DIGIT, ("+",)), r"\+(?<![\w.]\+)\d{1,3}(?:[\s.-]?\(?\d{2,4}\)?){2,4}(?![\w.]?\d)", DEID_TOKEN, None, 1),
    (
        (DIGIT, ("pager", "beeper", "pgr", "ext", "phone", "tel", "cell", "fax", "contact")),
        r"(?i)(\b(?:pager|beeper|pgr|ext|extension|phone|tel|telephone|cell|fax|contact)\.?\s*"
        r"(?:#|no\.?|number)?\s*:?\s*)\d[\d-]{2,}\d",
        _keep_keyword,
        None,
        ("pager", "beeper", "pgr", "ext", "phone", "tel", "cell", "fax", "contact"),
    ),
    (
        (DIGIT, _MONTH_CUES),
        r"(?i)\b(?:" + _DAY + r"[\s-]+(?:of\s+)?" + _MONTH + r"|" + _MONTH + r"\s+" + _DAY + r")"
        r"(?:,?[\s-]+(?:" + _YEAR + r"))?\b" + _NOT_UNIT,
        DEID_TOKEN,
        None,
        _MONTH_CUES + tuple("0123456789"),
    ),
    (
        (DIGIT, _MONTH_CUES),
        r"(?i)\b" + _MONTH + r",?\s+(?:" + _YEAR + r")\b",
        DEID_TOKEN,
        _shapes("0000", "'00"),
        _MONTH_CUES,
    ),
    (
        DIGIT,
        r"\d(?<![\d.]\d)\d{0,3}(?P<sep>[/.-])\d{1,2}(?P=sep)\d{2,4}(?![\d.]?\d)",
        DEID_TOKEN,
        _shapes("{}0{}", "{}00{}", separators="/.-"),
        0,
    ),
    ((DIGIT, ("/",)), r"(?<![\d./])(?:0?[1-9]|1[0-2])/(?:19|20)\d{2}\b", DEID_TOKEN, _shapes("0/0000"), 0),
    # Month/day without a year only after a date preposition: "1/2" alone is a fraction.
    (
        (DIGIT, ("/",)),
        r"(?i)(\b(?:on|from|since|dated|of|until|through)\s+)(?:0?[1-9]|1[0-2])/(?:0?[1-9]|[12]\d|3[01])\b(?![/\d])",
        _keep_keyword,
        _shapes("0/0"),
        ("on", "from", "since", "dated", "of", "until", "through"),
    ),
    (("day",), r"\b(?:Mon|Tues|Wednes|Thurs|Fri|Satur|Sun)day\b", DEID_TOKEN, None, None),
    (
        (DIGIT, _AM_PM_CUES),
        r"(?i)\d(?<![\d.]\d)\d?[:.]\d{2}(?::\d{2})?\s*(?:[ap]\.?m\.?)(?!\w)",
        _keep_full_stop,
        _shapes("0:00", "0.00"),
        0,
    ),
    (
        (DIGIT, (":",)),
        r"\d(?<![\d.:]\d)\d?:\d{2}(?::\d{2})?(?![\d:])(?:\s*(?:h|hrs|hours)\b)?",
        DEID_TOKEN,
        _shapes("0:00"),
        0,
    ),
    ((DIGIT, _AM_PM_CUES), r"(?i)\d(?<![\d.]\d)\d?\s*[ap]\.?m\.?(?!\w)", _keep_full_stop, None, 0),
    ((DIGIT, ("h",)), r"(?i)\d(?<![\d.]\d)\d{3}\s*(?:h|hrs|hours)\b", DEID_TOKEN, _shapes("0000"), 0),
    (DIGIT, r"(?:19|20)(?<![\d.]\d\d)\d{2}(?![\d.]?\d)" + _NOT_UNIT, DEID_TOKEN, _shapes("0000"), 0),
    (
        (DIGIT, ("y",)),
        r"(?i)\b(?:9\d|1[0-4]\d)(?=[\s-]*(?:years?|yrs?|y/?o|y\.o\.|year-old)\b)",
        DEID_TOKEN,
        _shapes("00"),
        0,
    ),
    ((DIGIT, ("age",)), r"(?i)(\bage[d]?\s*:?\s*)(?:9\d|1[0-4]\d)\b", _keep_keyword, _shapes("00"), ("age",)),
    (DIGIT, r"\d(?<![\d.]\d)\d{4,}(?![\d.]?\d)" + _NOT_UNIT, DEID_TOKEN, _shapes("00000"), 0),
    (DIGIT, r"\b[A-Z]{1,3}\d{5,}\b", DEID_TOKEN, _shapes("A00000"), 3),
    (
        ("dr", "mr", "ms", "miss", "prof", "nurse", "doctor"),
        r"(\b(?:Dr|DR|Drs|Doctor|DOCTOR|Mr|MR|Mrs|MRS|Ms|MS|Miss|MISS|Prof|PROF|Professor|Nurse|NURSE)"
        r"(?:\.\s*|\s+))" + _NAME + r"\b",
        _title_replacement,
        None,
        ("dr", "mr", "ms", "miss", "prof", "nurse", "doctor"),
    ),
    (
        ("discussed", "communicated", "conveyed", "spoke", "notified", "paged", "informed", "signed",
         "dictated", "reported", "read by", "reviewed", "attending", "radiologist", "resident", "technologist"),
        r"(\b(?i:discussed\s+with|communicated\s+(?:to|with)|conveyed\s+to|spoke\s+(?:with|to)|"
        r"notified|paged|informed|signed(?:\s+by)?|dictated\s+by|reported\s+to|read\s+by|reviewed\s+by|"
        r"attending|radiologist|resident|technologist)\s*:?\s+)"
        r"[A-Z][a-z'\u2019-]+(?:\s+[A-Z]\.)?\s+[A-Z][A-Za-z'\u2019-]+\b",
        _keep_keyword,
        None,
        ("discussed", "communicated", "conveyed", "spoke", "notified", "paged", "informed", "signed",
         "dictated", "reported", "read", "reviewed", "attending", "radiologist", "resident", "technologist"),
    ),
    (
        ("md", "m.d.", "rn", "r.n.", "np", "pa-c", "do", "phd", "frcr"),
        r"\b[A-Z][a-z'\u2019-]+(?:\s+[A-Z]\.)?\s+[A-Z][A-Za-z'\u2019-]+"
        r"(?=,?\s+(?:MD|M\.D\.|RN|R\.N\.|NP|PA-C|DO|PhD|FRCR)\b)",
        DEID_TOKEN,
        None,
        None,
    ),
]


def _compile_gate(gate):
    needs_digit = gate == DIGIT or (isinstance(gate[0], str) and gate[0] == DIGIT)
    cues = () if gate == DIGIT else gate[1] if gate[0] == DIGIT else gate
    return needs_digit, tuple(cues)


_COMPILED = [
    (*_compile_gate(gate), re.compile(pattern), replacement, shapes, starts)
    for gate, pattern, replacement, shapes, starts in _RULES
]
_HAS_DIGIT = re.compile(r"\d")
_RUN_OF_TOKENS = re.compile(re.escape(DEID_TOKEN) + r"(?:[\s,;/:.-]*" + re.escape(DEID_TOKEN) + r")+")
_SHAPE = bytes.maketrans(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", b"0" * 10 + b"A" * 26)


def deidentify(text):
    """Replace dates, times, phone/record numbers, ages over 89, names and `___` in `text` with
    `DEID_TOKEN`, collapsing consecutive tokens. Deterministic; see the module docstring."""
    # Gates are tested on the report as given, shapes and starts on the text as the rules leave it.
    lowered = text.lower()
    first_digit = _HAS_DIGIT.search(text)
    has_digit = first_digit is not None
    shape = None
    for needs_digit, cues, pattern, replacement, shapes, starts in _COMPILED:
        if needs_digit and not has_digit:
            continue
        if cues and not _holds_any(lowered, cues):
            continue
        if shapes and text.isascii():
            if shape is None:
                shape = text.encode().translate(_SHAPE)
            if not _holds_any(shape, shapes):
                continue
        if isinstance(starts, int):
            if first_digit is None:
                continue
            replaced = _sub_from(pattern, replacement, text, max(0, first_digit.start() - starts))
        elif starts and text.isascii():
            replaced = _sub_at_anchors(pattern, replacement, text, starts)
        else:
            replaced = pattern.sub(replacement, text)
        if replaced is not text:
            text, shape, first_digit = replaced, None, _HAS_DIGIT.search(replaced)
    return _RUN_OF_TOKENS.sub(DEID_TOKEN, text)


def _holds_any(text, parts):
    for part in parts:
        if part in text:
            return True
    return False


def _sub_at_anchors(pattern, replacement, text, anchors):
    """`pattern.sub(replacement, text)` for a pattern whose matches all start at one of the
    lowercase `anchors` in ASCII `text`: a match is tried at those positions only, left to right,
    each after the previous match, as `sub` finds them."""
    lowered = text.lower()
    starts = set()
    for anchor in anchors:
        at = lowered.find(anchor)
        while at >= 0:
            starts.add(at)
            at = lowered.find(anchor, at + 1)
    return _joined(text, replacement, _matches_at(pattern, text, sorted(starts)))


def _matches_at(pattern, text, starts):
    end = 0
    for start in starts:
        if start >= end:
            match = pattern.match(text, start)
            if match:
                end = match.end()
                yield match


def _sub_from(pattern, replacement, text, start):
    """`pattern.sub(replacement, text)` for a pattern that matches nowhere before `start`."""
    return _joined(text, replacement, pattern.finditer(text, start))


def _joined(text, replacement, matches):
    """`text` with each of `matches` (in order, not overlapping, none empty) replaced."""
    pieces, end = [], 0
    for match in matches:
        pieces += (text[end:match.start()], replacement(match) if callable(replacement) else replacement)
        end = match.end()
    if not pieces:
        return text
    pieces.append(text[end:])
    return "".join(pieces)


__all__ = ["DEID_TOKEN", "deidentify"]
