"""Search text rules: normalisation, tokens, query terms and highlights (pure).

Text and queries go through the same `normalise`: Unicode NFKC (which also folds
full-width Latin and half-width katakana), then case folding. The normalised
text is split into

- words: runs of letters and digits outside the CJK scripts; they match by
  word prefix ("hel" finds "Hello", "cat" does not find "concat");
- CJK runs: runs of Han, kana and Hangul, which carry no spaces; they match as
  substrings of any length.

The index holds one "document" per message: the words, each CJK character on
its own, and each CJK bigram, at consecutive positions. A query term is then
one index token or a phrase of tokens:

    word "hel"      -> prefix token  hel*
    CJK "好"        -> token         好
    CJK "明天"      -> token         明天
    CJK "明天见"    -> phrase        明天 天见   (bigrams at adjacent positions)

Bigrams of one run sit at adjacent positions and unigrams after them, so a
phrase of bigrams matches exactly the runs that contain the substring. Terms
are ANDed.

Highlight offsets are in UTF-16 code units of the ORIGINAL text (what
JavaScript's String indexes and `slice` use), end exclusive: an emoji before a
match counts 2, a CJK character 1.
"""

from __future__ import annotations

import re
import unicodedata
from bisect import bisect_left
from dataclasses import dataclass
from typing import NamedTuple

MAX_QUERY_LENGTH = 100
MAX_TERMS = 8
# Longer words are indexed by their first MAX_WORD characters (prefix matching
# still finds them by any query of at most that length).
MAX_WORD = 40


def is_cjk(ch: str) -> bool:
    """Han ideographs (with extensions and compatibility forms), kana, Hangul."""
    o = ord(ch)
    return (
        0x3400 <= o <= 0x4DBF or 0x4E00 <= o <= 0x9FFF or 0xF900 <= o <= 0xFAFF
        or 0x20000 <= o <= 0x3134F
        or 0x3040 <= o <= 0x30FF or 0x31F0 <= o <= 0x31FF  # hiragana, katakana
        or 0xAC00 <= o <= 0xD7AF or 0x1100 <= o <= 0x11FF or 0x3130 <= o <= 0x318F
        or o == 0x3005  # 々 (repetition mark, part of words)
    ) and o != 0x30FB  # ・ is punctuation


# is_cjk as a regular-expression class (the same code points).
_CJK = ("\u3005\u3040-\u30fa\u30fc-\u30ff\u3130-\u318f\u31f0-\u31ff"
        "\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\u1100-\u11ff"
        "\U00020000-\U0003134f")
# A CJK run, or a run of alphanumerics that are not CJK (`[^\W_]` is str.isalnum).
_RUNS = re.compile(f"([{_CJK}]+)|([^\\W_{_CJK}]+)")
# What is neither a word character nor a space: punctuation, symbols, and the
# combining marks that `_is_word_char` counts as part of a word and `_RUNS` does not.
_OTHER = re.compile(r"[^\w\s]")
_CJK_CHAR = re.compile(f"[{_CJK}]")


def _has_marks(norm: str) -> bool:
    if norm.isascii():  # no combining marks there, and no lookups per symbol
        return False
    return any(unicodedata.category(ch) in ("Mn", "Mc") for ch in _OTHER.findall(norm))


def _is_word_char(ch: str) -> bool:
    return ch.isalnum() or unicodedata.category(ch) in ("Mn", "Mc")


def _clusters(text: str):
    """(start, end) code point spans of a base character and its combining marks:
    NFKC composes within such a span, so each normalises on its own."""
    n = len(text)
    i = 0
    while i < n:
        j = i + 1
        while j < n and unicodedata.combining(text[j]):
            j += 1
        yield i, j
        i = j


def normalise(text: str) -> str:
    if text.isascii():  # NFKC leaves ASCII as it is, and casefold is lower there
        return text.lower()
    return unicodedata.normalize("NFKC", text).casefold()


class _Fold(dict):
    """A str.translate table: each character's normal form, worked out the
    first time the character is seen. Bounded: past FOLD_CACHE characters it
    starts again."""

    def __missing__(self, code: int) -> str:
        if len(self) >= FOLD_CACHE:
            self.clear()
        out = self[code] = unicodedata.normalize("NFKC", chr(code)).casefold()
        return out


FOLD_CACHE = 50_000
_FOLD = _Fold()


def normalise_mapped(text: str) -> tuple[str, list[tuple[int, int]] | None]:
    """The normalised text and, for each of its characters, the span of the
    original (code point offsets) it came from; None when each character of
    the original became one character (the spans are then (i, i + 1))."""
    if text.isascii():
        return text.lower(), None
    if not _has_marks(text):
        # No combining marks: every character is a cluster of its own, and
        # translate folds them in one pass.
        norm = text.translate(_FOLD)
        if len(norm) == len(text):  # a fold never shortens a character
            return norm, None
        spans = []
        for i, ch in enumerate(text):
            spans.extend([(i, i + 1)] * len(_FOLD[ord(ch)]))
        return norm, spans
    out: list[str] = []
    spans = []
    for a, b in _clusters(text):
        piece = unicodedata.normalize("NFKC", text[a:b]).casefold()
        out.append(piece)
        spans.extend([(a, b)] * len(piece))
    return "".join(out), spans


class Segment(NamedTuple):  # a tuple: highlights makes one per run of every result
    kind: str  # "word" | "cjk"
    text: str
    start: int  # offsets in the normalised text
    end: int


def segments(norm: str) -> list[Segment]:
    """Words and CJK runs of normalised text, in order."""
    if _has_marks(norm):
        return _walk_segments(norm)
    # Without combining marks a word is a run of alphanumerics: one regular
    # expression pass gives what the character walk does.
    return [Segment("cjk", m[0], m.start(), m.end()) if m[1] else
            Segment("word", m[0], m.start(), m.end()) for m in _RUNS.finditer(norm)]


def _walk_segments(norm: str) -> list[Segment]:
    """segments, one character at a time (a combining mark belongs to its word)."""
    out: list[Segment] = []
    i, n = 0, len(norm)
    while i < n:
        ch = norm[i]
        if is_cjk(ch):
            j = i + 1
            while j < n and is_cjk(norm[j]):
                j += 1
            out.append(Segment("cjk", norm[i:j], i, j))
        elif _is_word_char(ch):
            j = i + 1
            while j < n and _is_word_char(norm[j]) and not is_cjk(norm[j]):
                j += 1
            out.append(Segment("word", norm[i:j], i, j))
        else:
            i += 1
            continue
        i = j
    return out


def document_tokens(*texts: str) -> list[str]:
    """The index tokens of the given texts (message text, caption, file name),
    in position order (see the module docstring)."""
    tokens: list[str] = []
    for text in texts:
        if not text:
            continue
        norm = normalise(text)
        if _has_marks(norm):
            # Rare (accents NFKC cannot compose, Indic vowel signs): the
            # character walk, which keeps the marks inside their words.
            runs = [("", s.text) if s.kind == "word" else (s.text, "") for s in segments(norm)]
        else:
            # The message writer tokenises every message: one regular
            # expression pass instead of a Python step per character.
            runs = _RUNS.findall(norm)
        for run, word in runs:
            if word:
                tokens.append(word[:MAX_WORD])
            else:
                tokens.extend([run[k:k + 2] for k in range(len(run) - 1)])
                tokens.extend(run)
    return tokens


def listed(word: str) -> bool:
    """Whether a word (or a word prefix) goes through the word list: not one
    that starts with a digit. Numbers (order numbers, amounts, times, phone
    numbers) are mostly unique, so listing them would add a row to the list
    for nearly every message that carries one, where the list is meant to be
    a vocabulary; a term that starts with a digit is asked of the index as a
    prefix, and any other prefix only ever stands for listed words."""
    return not word[:1].isdecimal()


def listed_words(tokens: list[str]) -> set[str]:
    """The tokens of a document that the word list holds: words (a CJK token
    starts with a CJK character, a word never does) that are `listed`."""
    cjk = _CJK_CHAR.match
    return {t for t in tokens if not cjk(t) and listed(t)}


def document(*texts: str) -> str:
    """The tokens as one space-separated string (what SQLite's FTS5 indexes)."""
    return " ".join(document_tokens(*texts))


@dataclass(frozen=True)
class Term:
    kind: str  # "word" (prefix) | "cjk" (substring)
    text: str

    def tokens(self) -> list[str]:
        """Index tokens the term is: one, or a phrase of bigrams."""
        if self.kind == "word":
            return [self.text[:MAX_WORD]]
        if len(self.text) <= 2:
            return [self.text]
        return [self.text[k:k + 2] for k in range(len(self.text) - 1)]

    @property
    def prefix(self) -> bool:
        return self.kind == "word"


class BadQuery(ValueError):
    pass


def parse_query(q: str) -> list[Term]:
    """A user's query → its terms (deduplicated, in order). Raises BadQuery for
    an empty or too long query, or one with nothing searchable in it."""
    if not isinstance(q, str) or not q.strip():
        raise BadQuery("Search text cannot be empty.")
    if len(q) > MAX_QUERY_LENGTH:
        raise BadQuery(f"Search text is limited to {MAX_QUERY_LENGTH} characters.")
    terms: list[Term] = []
    for seg in segments(normalise(q)):
        t = Term(seg.kind, seg.text)
        if t not in terms:
            terms.append(t)
    if not terms:
        raise BadQuery("Search text has no letters, digits or CJK characters.")
    if len(terms) > MAX_TERMS:
        raise BadQuery(f"At most {MAX_TERMS} search terms.")
    return terms


def matches(text: str, terms: list[Term]) -> bool:
    """Whether every term occurs in the text (the index's rule, in Python)."""
    norm = normalise(text)
    segs = segments(norm)
    return all(_term_spans(t, segs) for t in terms)


def _term_spans(term: Term, segs: list[Segment]) -> list[tuple[int, int]]:
    out = []
    for seg in segs:
        if seg.kind != term.kind:
            continue
        if term.kind == "word":
            if seg.text.startswith(term.text):
                out.append((seg.start, seg.start + len(term.text)))
        else:
            k = seg.text.find(term.text)
            while k != -1:
                out.append((seg.start + k, seg.start + k + len(term.text)))
                k = seg.text.find(term.text, k + 1)
    return out


_ASTRAL = re.compile("[\U00010000-\U0010ffff]")


def _utf16(text: str, spans: list[list[int]]) -> list[list[int]]:
    """Code point spans of `text` as UTF-16 spans: a character beyond the
    Basic Multilingual Plane (most emoji) is two code units."""
    astral = [m.start() for m in _ASTRAL.finditer(text)]
    if not astral:
        return spans
    return [[a + bisect_left(astral, a), b + bisect_left(astral, b)] for a, b in spans]


def highlights(text: str, terms: list[Term]) -> list[list[int]]:
    """[[start, end], …] of every match of every term in the ORIGINAL text, in
    UTF-16 code units, sorted, overlapping spans merged."""
    if not text:
        return []
    norm, spans = normalise_mapped(text)
    segs = segments(norm)
    found: list[tuple[int, int]] = []
    for term in terms:
        for a, b in _term_spans(term, segs):
            found.append((a, b) if spans is None else (spans[a][0], spans[b - 1][1]))
    if not found:
        return []
    found.sort()
    merged = [list(found[0])]
    for a, b in found[1:]:
        if a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return merged if text.isascii() else _utf16(text, merged)


# --- names: contacts and groups ------------------------------------------------


def name_keys(name: str) -> list[str]:
    """What a name (display name, remark, group title) is matched on: the
    normalised name, and for Chinese names the full pinyin and the initials
    ("张三" -> "张三", "zhangsan", "zs")."""
    if not name:
        return []
    norm = normalise(name)
    keys = [norm]
    if any(is_cjk(c) for c in norm):
        from pypinyin import Style, lazy_pinyin

        full = lazy_pinyin(norm, errors="default")
        keys.append("".join(full).replace(" ", ""))
        initials = lazy_pinyin(norm, style=Style.FIRST_LETTER, errors="default")
        keys.append("".join(initials).replace(" ", ""))
    return keys


def name_matches(q: str, *names: str | None) -> bool:
    """Contact / group search: the normalised query (spaces removed) is a
    substring of the name or of its pinyin or initials."""
    needle = "".join(normalise(q).split())
    if not needle:
        return False
    for name in names:
        for key in name_keys(name or ""):
            if needle in key.replace(" ", ""):
                return True
    return False
