"""Clinical text normaliser for radiology reports, and the left/right swap for flipped images.

`ClinicalTextNormalizer` runs, in order, each step switchable:

1. section extraction: keep the requested sections (FINDINGS and IMPRESSION by default) of a
   full report, dropping INDICATION, HISTORY, COMPARISON, TECHNIQUE, EXAMINATION, ...; a report
   with none of the requested sections is kept whole;
2. de-identification: dates, times, phone/record numbers, names, ages over 89 and MIMIC's `___`
   become one `DEID_TOKEN` (see `clinical_deid_medvl`);
3. abbreviation expansion from the curated tables in `clinical_abbreviations_medvl`, case- and
   context-aware ("PA and lateral" -> posteroanterior, "enlarged PA" -> pulmonary artery,
   "L base" -> left base, a lone "L" untouched);
4. terminology standardisation: American spelling and one preferred term per synonym group
   (`clinical_terms_medvl`);
5. whitespace collapsed to single spaces.

Every step is a pure function of its input: the same text always gives the same output.
"""

import re

from .clinical_abbreviations_medvl import ABBREVIATIONS, CONTEXTUAL, LATERALITY_CONTEXT, PLURALS, SHORTHAND
from .clinical_deid_medvl import DEID_TOKEN, deidentify
from .clinical_terms_medvl import (
    LATERALITY_ABBREVIATIONS,
    LATERALITY_FIXED,
    LATERALITY_WORDS,
    LINGULA_TO_MIDDLE_LOBE,
    MIDDLE_LOBE_TO_LINGULA,
    SPELLING_RULES,
    SYNONYMS,
)

# Case-insensitive matching is ASCII-only: under full Unicode folding "ſ" would match "s" and
# "K" (Kelvin) "k", and the matched text would miss the lookup tables.
_ASCII_IGNORECASE = re.IGNORECASE | re.ASCII


def _alternation(keys, space=" "):
    """A regex matching any of `keys` (a space in a key matches `space`), the longest first where
    one is a prefix of another, as a longest-first alternation would, but written as a trie: the
    regex engine tries the alternatives of a group one by one, and a flat alternation of a few
    hundred keys costs that many tries at every position."""
    trie = {}
    for key in keys:
        node = trie
        for char in key:
            node = node.setdefault(char, {})
        node[""] = {}
    return _trie_regex(trie, space)


def _trie_regex(node, space):
    branches = [(space if char == " " else re.escape(char)) + _trie_regex(child, space)
                for char, child in node.items() if char]
    if not branches:
        return ""
    alternation = branches[0] if len(branches) == 1 and "" not in node else "(?:" + "|".join(branches) + ")"
    # Greedy "?": the longer keys below this node are tried before the key that ends here.
    return alternation + "?" if "" in node else alternation


# Canonical section name -> header spellings (matched case-insensitively, any spacing).
SECTION_ALIASES = {
    "findings": ("findings", "finding", "findings and impression", "findings/impression"),
    "impression": ("impression", "impressions", "conclusion", "conclusions", "impression and recommendations"),
    "indication": ("indication", "indications", "clinical indication", "reason for exam",
                   "reason for examination", "reason for study"),
    "history": ("history", "clinical history", "clinical information", "clinical data",
                "medical history"),
    "comparison": ("comparison", "comparisons", "prior studies", "prior study"),
    "technique": ("technique", "procedure", "procedures"),
    "examination": ("examination", "exam", "type of examination", "study"),
    "recommendation": ("recommendation", "recommendations"),
    "notification": ("notification", "communication"),
    "wet_read": ("wet read",),
}
# Headers that stand on their own line without a colon in MIMIC-CXR.
_COLONLESS_HEADERS = {"final report": "final_report", "addendum": "addendum"}

_HEADER_NAME = {" ".join(alias.split()): name for name, aliases in SECTION_ALIASES.items() for alias in aliases}


def _header_alternation(upper=False):
    return _alternation([alias.upper() if upper else alias for alias in _HEADER_NAME], space=r"[ \t]+")


_HEADER_RE = re.compile(
    r"(?m)(?:^|(?<=[.!?;]))[ \t]*(?:(?P<header>(?ai:" + _header_alternation() + r"))[ \t]*:"
    r"|(?P<colonless>(?ai:final[ \t]+report|addendum))[ \t]*$)"
    # An all-capitals header counts anywhere: "No acute process IMPRESSION: Normal."
    r"|(?<![\w-])(?P<upper>" + _header_alternation(upper=True) + r")[ \t]*:"
)


def extract_sections(text):
    """Split a report into sections: {canonical name: content}, in order of appearance.

    Headers are recognised at a line start or after a sentence end, in any case, with any
    spacing, followed by a colon ("FINDINGS:", "Impression :", "clinical  history:"), and
    anywhere when written in capitals; aliases map to one name ("CONCLUSION" -> "impression",
    "FINDINGS AND IMPRESSION" -> "findings"). Text before the first header is kept under
    "preamble". A repeated section is joined with a space. Contents are stripped.
    """
    sections = {}
    name, start = "preamble", 0
    for match in _header_matches(text):
        _add_section(sections, name, text[start:match.start()])
        header = match.group("header") or match.group("upper")
        if header:
            name = _HEADER_NAME[" ".join(header.lower().split())]
        else:
            name = _COLONLESS_HEADERS[" ".join(match.group("colonless").lower().split())]
        start = match.end()
    _add_section(sections, name, text[start:])
    return sections


def _header_matches(text):
    """`_HEADER_RE.finditer(text)`, scanning only where a header can be.

    A header never spans lines (its spacing is [ \t]) and ends in a colon unless it is a colonless
    header line, so a line is scanned up to its last colon, or whole when it holds a colonless
    header word, and not at all otherwise: the regex costs about 0.1 us a character. The scan runs
    in place (pos/endpos), so "^", "$" and the lookbehinds see what they see in the whole text.
    """
    lowered = text.lower()
    colonless = "final" in lowered or "addendum" in lowered
    start = 0
    # lower() keeps every line break, so the lines of `lowered` are those of `text`.
    for line, lowered_line in zip(text.split("\n"), lowered.split("\n")):
        if colonless and ("final" in lowered_line or "addendum" in lowered_line):
            yield from _HEADER_RE.finditer(text, start, start + len(line))
        else:
            colon = line.rfind(":")
            if colon >= 0:
                yield from _HEADER_RE.finditer(text, start, start + colon + 1)
        start += len(line) + 1


def _add_section(sections, name, content):
    content = content.strip()
    if content:
        sections[name] = f"{sections[name]} {content}" if name in sections else content
    elif name != "preamble":
        sections.setdefault(name, "")


# ---------------------------------------------------------------- abbreviation expansion

_CASE_INSENSITIVE = {key.lower(): value for key, value in SHORTHAND.items()}

# Table keys all end in a letter or digit (checked by the tests), so one word boundary fits all.
_UPPER_KEYS = list(ABBREVIATIONS) + list(CONTEXTUAL)
# Shorthand first: "R/O" must reach "r/o" before the lone "R" is tried.
_ALTERNATIVES = [
    r"(?P<shortsym>(?ai:" + _alternation([k for k in SHORTHAND if not k[-1].isalnum()]) + r"))",
    r"(?P<short>(?ai:" + _alternation([k for k in SHORTHAND if k[-1].isalnum()]) + r"))(?![\w/])"
    r"(?P<shortdot>\.(?=\s*[a-z0-9]))?",
    r"(?P<word>" + _alternation(_UPPER_KEYS) + r")(?P<plural>s)?(?!\w)(?P<dot>\.(?=\s*[a-z]))?",
]
# Every key starts with an ASCII letter: the lookahead rejects other positions before the
# lookbehind and the alternatives are tried.
_ABBREVIATION_RE = re.compile(r"(?=[A-Za-z])(?<![\w/.-])(?:" + "|".join(_ALTERNATIVES) + r")")
_COMPILED_CONTEXT = {
    abbreviation: [
        (expansion,
         re.compile(follows, _ASCII_IGNORECASE) if follows is not None else None,
         re.compile(precedes, _ASCII_IGNORECASE) if precedes is not None else None,
         nearby)
        for expansion, follows, precedes, nearby in senses
    ]
    for abbreviation, senses in CONTEXTUAL.items()
}
# Abbreviations written with a period ("Rt. lung"): the period goes with the expansion; any other
# abbreviation followed by a period and a lower-case word keeps the period.
_DOTTED = {"Rt", "Lt", "RT", "LT"}
_GREATER_THAN_RE = re.compile(r"(?<![\w/])([LR])\s*>\s*([LR])(?![\w/])")
_SIDE = {"L": "left", "R": "right"}
_WORD_RE = re.compile(r"[A-Za-z][\w'-]*")
_SENTENCE_MARK_RE = re.compile(r"[.!?:;\n]")
_DEID_WORD = DEID_TOKEN.strip("[]")
# A period after "vs" or "approx" does not end a sentence.
_SENTENCE_START_RE = re.compile(r"(?:^|(?<!\bvs)(?<!\bapprox)[.!?:]\s*)$", re.IGNORECASE)


def expand_abbreviations(text):
    """Expand the curated abbreviations in `text` (see `clinical_abbreviations_medvl`).

    Whole tokens only ("CHF" in "CHFx" stays); upper-case abbreviations match only in their
    own case, lowercase shorthand in any case. Ambiguous ones follow their context rules and stay
    as written when no rule applies. The expansion is capitalised at a sentence start and
    upper-cased inside an all-capitals sentence.
    """
    if ">" in text:
        text = _GREATER_THAN_RE.sub(
            lambda m: _fit_case(f"{_SIDE[m.group(1)]} greater than {_SIDE[m.group(2)]}", text, m.start(), m.end())
            if m.group(1) != m.group(2) else m.group(0),
            text,
        )
    return _ABBREVIATION_RE.sub(lambda match: _expand(match, text), text)


def _expand(match, text):
    if match.group("word"):
        abbreviation = match.group("word")
        if abbreviation in CONTEXTUAL:
            expansion = _resolve_context(abbreviation, text, match.start(), match.end("word"))
            if expansion is None:
                return match.group(0)
        else:
            expansion = ABBREVIATIONS[abbreviation]
        if match.group("plural"):
            expansion = PLURALS.get(abbreviation, expansion + "s")
        if match.group("dot") and abbreviation not in _DOTTED:
            expansion += "."
    else:
        # A shorthand's own period ("approx. 2 cm", "pt. is") is dropped with the shorthand.
        expansion = _CASE_INSENSITIVE[(match.group("short") or match.group("shortsym")).lower()]
    return _fit_case(expansion, text, match.start(), match.end())


def _resolve_context(abbreviation, text, start, end):
    before, after = text[max(0, start - 60):start], text[end:end + 60]
    nearby_words = {w.lower() for w in _WORD_RE.findall(before)[-3:] + _WORD_RE.findall(after)[:3]}
    for expansion, follows, precedes, nearby in _COMPILED_CONTEXT[abbreviation]:
        if follows is not None and follows.match(after):
            return expansion
        if precedes is not None and precedes.search(before):
            return expansion
        if nearby is not None and nearby & nearby_words:
            return expansion
    return None


def _fit_case(expansion, text, start, end):
    """Upper-case inside a shouting sentence, capitalise at a sentence start, else as written."""
    sentence_start = max([text.rfind(mark, 0, start) for mark in ".!?:;\n"]) + 1
    mark = _SENTENCE_MARK_RE.search(text, end)
    sentence_end = mark.start() if mark else len(text)
    if _is_shouting(_WORD_RE.findall(text[sentence_start:start] + " " + text[end:sentence_end])):
        return expansion.upper()
    if text[start].isupper() and _starts_sentence(text, start):
        return expansion[0].upper() + expansion[1:]
    return expansion


def _is_shouting(words):
    """Whether the words of three letters or more, less abbreviations and the de-identification
    token, are all capitals (and there is one)."""
    shouting = False
    for word in words:
        if len(word) >= 3 and word not in ABBREVIATIONS and word.lower() not in _CASE_INSENSITIVE and word != _DEID_WORD:
            if not word.isupper():
                return False
            shouting = True
    return shouting


def _starts_sentence(text, start):
    # `_SENTENCE_START_RE.search(text[:start])`, tried only where it can match: at the last
    # non-space character before `start`, or at the text start.
    return _SENTENCE_START_RE.search(text, max(0, len(text[:start].rstrip()) - 1), start) is not None


# ---------------------------------------------------------------- terminology

def _cues(cue):
    return (cue,) if isinstance(cue, str) else tuple(cue)


def _required_words(pattern):
    """The literal words every match of a synonym pattern holds: those outside groups, lookarounds
    and character classes, less a letter made optional by a quantifier ("changes?")."""
    while "(" in pattern:
        pattern = re.sub(r"\((?:[^()\\]|\\.)*\)", " ", pattern)
    pattern = re.sub(r"\[(?:[^\]\\]|\\.)*\]|\\.|[a-z](?=[?*{])", " ", pattern)
    return tuple(re.findall(r"[a-z]+", pattern))


# Each spelling rule runs only when one of its cues occurs in the lowercased report, each synonym
# only when all its required words occur in the lowercased text after spelling (a synonym's word
# may be spelt the British way in the report: "haemi-diaphragm"). A required word that a synonym
# writes was in the text it replaced, or cannot complete a later synonym's match ("hemi" in
# "hemidiaphragm" is no "hemi-thorax"), so the gates skip only rules that would not match.
_SPELLING = [(_cues(cue), re.compile(pattern, _ASCII_IGNORECASE), replacement) for cue, pattern, replacement in SPELLING_RULES]
_SYNONYMS = [
    (_required_words(pattern), re.compile(r"\b" + pattern, _ASCII_IGNORECASE), replacement)
    for pattern, replacement in SYNONYMS.items()
]


def _same_case(replacement, original):
    if original.isupper() and len(original) > 1:
        return replacement.upper()
    if original[:1].isupper():
        return replacement[:1].upper() + replacement[1:]
    return replacement


def standardize_terms(text):
    """American spelling ("oedema" -> "edema") and one preferred term per synonym group
    ("pleural fluid" -> "pleural effusion"), keeping the case pattern of the replaced words."""
    lowered = text.lower()
    for cues, pattern, replacement in _SPELLING:
        for cue in cues:
            if cue in lowered:
                text = _replace_term(pattern, replacement, text)
                break
    lowered = text.lower()
    for words, pattern, replacement in _SYNONYMS:
        for word in words:
            if word not in lowered:
                break
        else:
            text = _replace_term(pattern, replacement, text)
    return text


def _replace_term(pattern, replacement, text):
    return pattern.sub(lambda m: _same_case(replacement, m.group(0)), text)


# ---------------------------------------------------------------- laterality

_LATERALITY_RE = re.compile(
    r"(?P<middle>\b" + MIDDLE_LOBE_TO_LINGULA + r"\b)"
    r"|(?P<lingula>\b" + LINGULA_TO_MIDDLE_LOBE + r"\b)"
    r"|(?P<abbr>\b(?:" + _alternation(LATERALITY_ABBREVIATIONS) + r")\b)"
    r"|(?P<greater>(?<![\w/])[LR]\s*>\s*[LR](?![\w/]))"
    r"|(?P<letter>(?<![\w/.-])(?:[LR]|Lt|Rt|LT|RT)(?=\.?\s*" + LATERALITY_CONTEXT + r"))"
    r"|(?P<word>\b(?:" + _alternation(LATERALITY_WORDS) + r")\b(?!" + LATERALITY_FIXED + r"))",
    _ASCII_IGNORECASE,
)


_SWAP_LR = str.maketrans("LR", "RL")


def _swap(match):
    found = match.group(0)
    if match.group("middle"):
        return _same_case("lingula", found) if found != "RML" else "lingula"
    if match.group("lingula"):
        return _same_case("right middle lobe", found)
    if match.group("abbr"):
        return LATERALITY_ABBREVIATIONS[found] if found.isupper() else found
    if match.group("greater") or match.group("letter"):
        # Lower-case "l"/"r" (litres, "r/o") are not sides.
        return found.translate(_SWAP_LR) if found[0].isupper() else found
    return _same_case(LATERALITY_WORDS[found.lower()], found)


def swap_laterality(text):
    """Mirror the sides named in a report, for a horizontally flipped image.

    left <-> right (any case, also in "left-sided", "leftward"), levo- <-> dextro- (scoliosis,
    convexity), lobe and region abbreviations (LLL <-> RLL, LUL <-> RUL, LIJ <-> RIJ, ...), "L"/"R"
    and "Lt"/"Rt" where they name a side ("L base", "Rt. effusion", "L > R"). "bilateral" and midline words stay.
    The right middle lobe has no left counterpart of its own: it maps to its mirror segment, the
    lingula, and the lingula maps back to "right middle lobe" (so "RML" returns expanded after
    two flips). Cardiac chambers and coronary arteries ("left ventricle") keep their names.
    """
    return _LATERALITY_RE.sub(_swap, text)


# ---------------------------------------------------------------- the normaliser


class ClinicalTextNormalizer:
    """Cleans a radiology report for a text tower: sections, de-identification, abbreviations,
    terminology, whitespace (module docstring). Call it on a string or a list of strings.

    Args:
        extract_sections: keep only `sections` of a full report (the whole text when none found).
        deidentify: replace identifiers with `DEID_TOKEN`.
        expand_abbreviations: expand the curated abbreviations.
        standardize_terms: American spelling and preferred synonyms.
        sections: canonical section names to keep, in output order (see `SECTION_ALIASES`).
        keep_section_headers: prefix each kept section with its name ("FINDINGS: ...").
        collapse_whitespace: turn every whitespace run into one space and strip the ends.
    """

    def __init__(
        self,
        extract_sections=True,
        deidentify=True,
        expand_abbreviations=True,
        standardize_terms=True,
        sections=("findings", "impression"),
        keep_section_headers=False,
        collapse_whitespace=True,
    ):
        unknown = [name for name in sections if name not in SECTION_ALIASES]
        if unknown:
            raise ValueError(f"unknown section names {unknown}; choose from {sorted(SECTION_ALIASES)}")
        self.extract_sections = bool(extract_sections)
        self.deidentify = bool(deidentify)
        self.expand_abbreviations = bool(expand_abbreviations)
        self.standardize_terms = bool(standardize_terms)
        self.sections = tuple(sections)
        self.keep_section_headers = bool(keep_section_headers)
        self.collapse_whitespace = bool(collapse_whitespace)

    def to_dict(self):
        """Settings as a JSON-serialisable dict; `ClinicalTextNormalizer(**d)` rebuilds it."""
        return {
            "extract_sections": self.extract_sections,
            "deidentify": self.deidentify,
            "expand_abbreviations": self.expand_abbreviations,
            "standardize_terms": self.standardize_terms,
            "sections": list(self.sections),
            "keep_section_headers": self.keep_section_headers,
            "collapse_whitespace": self.collapse_whitespace,
        }

    def __repr__(self):
        return f"ClinicalTextNormalizer({', '.join(f'{k}={v!r}' for k, v in self.to_dict().items())})"

    def __eq__(self, other):
        return isinstance(other, ClinicalTextNormalizer) and self.to_dict() == other.to_dict()

    def __call__(self, text):
        """Normalise one report (str -> str) or a list of reports (-> list); an empty or
        non-string report raises ValueError naming its index."""
        if isinstance(text, (list, tuple)):
            return [self._normalize(item, index) for index, item in enumerate(text)]
        return self._normalize(text, None)

    def _normalize(self, text, index):
        where = "report" if index is None else f"report at index {index}"
        if not isinstance(text, str):
            raise ValueError(f"{where} must be a string, got {type(text).__name__}")
        if not text.strip():
            raise ValueError(f"{where} is empty")
        if self.extract_sections:
            text = self._select_sections(text)
        if self.deidentify:
            text = deidentify(text)
        if self.expand_abbreviations:
            text = expand_abbreviations(text)
        if self.standardize_terms:
            text = standardize_terms(text)
        if self.collapse_whitespace:
            # str.split() splits on exactly the characters of the regex class \s.
            text = " ".join(text.split())
        return text

    def _select_sections(self, text):
        found = extract_sections(text)
        kept = [(name, found[name]) for name in self.sections if found.get(name)]
        if not kept:
            return text
        if self.keep_section_headers:
            return "\n".join(f"{name.upper()}: {content}" for name, content in kept)
        return "\n".join(content for _, content in kept)


__all__ = [
    "DEID_TOKEN",
    "SECTION_ALIASES",
    "ClinicalTextNormalizer",
    "deidentify",
    "expand_abbreviations",
    "extract_sections",
    "standardize_terms",
    "swap_laterality",
]
