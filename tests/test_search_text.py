"""The pure search text rules: normalisation, tokens, query terms, highlights, pinyin."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from app.services import search_text as st


def test_nfkc_width_and_case_folding():
    assert st.normalise("ＨＥＬＬＯ　Ｗｏｒｌｄ") == "hello world"
    assert st.normalise("ｶﾀｶﾅ") == "カタカナ"  # half-width katakana
    assert st.normalise("Straße") == "strasse"
    assert st.normalise("①") == "1"


def test_ascii_takes_the_short_way_to_the_same_normal_form():
    import unicodedata

    every = "".join(chr(c) for c in range(128))
    assert st.normalise(every) == unicodedata.normalize("NFKC", every).casefold()


def test_segments_split_words_from_cjk_runs():
    segs = st.segments(st.normalise("我们明天见 at 3pm, OK?"))
    assert [(s.kind, s.text) for s in segs] == [
        ("cjk", "我们明天见"), ("word", "at"), ("word", "3pm"), ("word", "ok")]
    # Kana and Hangul are CJK runs too; the middle dot is punctuation.
    assert [s.kind for s in st.segments("こんにちは・안녕")] == ["cjk", "cjk"]


def test_document_tokens_hold_bigrams_then_unigrams():
    assert st.document_tokens("明天见 Hi") == ["明天", "天见", "明", "天", "见", "hi"]
    assert st.document_tokens("好") == ["好"]


def _tokens_by_character_walk(text: str) -> list[str]:
    """document_tokens spelled out over the character walk (`segments` with
    marks), the rule queries and highlights use: the index must tokenise
    exactly like them."""
    tokens: list[str] = []
    for seg in st._walk_segments(st.normalise(text)):
        if seg.kind == "word":
            tokens.append(seg.text[:st.MAX_WORD])
        else:
            run = seg.text
            tokens.extend(run[k:k + 2] for k in range(len(run) - 1))
            tokens.extend(run)
    return tokens


# Text drawn from the blocks where the rules have edges: ASCII and underscore,
# accents that stay combining after NFKC, full-width forms, kana with the
# combining voiced marks and the middle dot, Hangul jamo, Han, emoji.
_EDGES = hs.text(hs.sampled_from(
    "aZ9_ -.,!?\t\n\u00e9\u0301\u0308\u0915\u093f\u0e34\uff21\uff41\uff10\u3000"
    "\u3005\u3041\u3099\u309a\u309b\u30a2\u30fb\u30fc\uff76\uff9e\u1100\u1161\uac00"
    "\u4e00\u597d\u660e\u5929\uf900\U00020000\U0001f600\u2460\u00df\u0130"), max_size=40)


@settings(max_examples=400, deadline=None)
@given(hs.one_of(_EDGES, hs.text(max_size=40)))
def test_document_tokens_equal_the_character_walk(text):
    assert st.document_tokens(text) == _tokens_by_character_walk(text)
    assert st.listed_words(st.document_tokens(text)) == {
        s.text[:st.MAX_WORD] for s in st._walk_segments(st.normalise(text))
        if s.kind == "word" and not s.text[0].isdecimal()}


def test_query_terms_and_their_tokens():
    terms = st.parse_query("  明天见  Hello ")
    assert terms == [st.Term("cjk", "明天见"), st.Term("word", "hello")]
    assert terms[0].tokens() == ["明天", "天见"]
    assert terms[1].tokens() == ["hello"] and terms[1].prefix
    assert st.parse_query("好")[0].tokens() == ["好"]
    # Full-width query folds like the text does.
    assert st.parse_query("ＨＥＬ") == [st.Term("word", "hel")]


@pytest.mark.parametrize("q", ["", "   ", "\u3000", "!!!", "x" * 101])
def test_bad_queries_are_refused(q):
    with pytest.raises(st.BadQuery):
        st.parse_query(q)


def test_matching_rule_cjk_substring_latin_word_prefix():
    assert st.matches("我们明天见", st.parse_query("明天"))
    assert st.matches("你好", st.parse_query("好"))
    assert not st.matches("明 天", st.parse_query("明天"))
    assert st.matches("Hello world", st.parse_query("hel"))
    assert not st.matches("concatenate", st.parse_query("cat"))
    assert st.matches("ＣＡＴ and 狗", st.parse_query("cat 狗"))
    assert not st.matches("cat", st.parse_query("cat 狗"))  # terms are ANDed


def test_highlights_are_utf16_offsets_into_the_original_text():
    text = "😀你好 Hello 😀 好"
    # 😀 is 2 UTF-16 units: 你 at 2, 好 at 3; "Hello" at 5..10; the last 好 at 14.
    assert st.highlights(text, st.parse_query("好 hel")) == [[3, 4], [5, 8], [14, 15]]
    js_slices = [text.encode("utf-16-le")[2 * a:2 * b].decode("utf-16-le")
                 for a, b in st.highlights(text, st.parse_query("你好"))]
    assert js_slices == ["你好"]


def test_highlights_map_folded_characters_back_to_their_source():
    text = "ＡＢＣ straße"
    assert st.highlights(text, st.parse_query("abc")) == [[0, 3]]
    assert st.highlights(text, st.parse_query("strasse")) == [[4, 10]]
    # A combining accent stays with its letter.
    assert st.highlights("cafe\u0301 x", st.parse_query("café")) == [[0, 5]]


def _highlights_the_slow_way(text: str, terms) -> list[list[int]]:
    """highlights spelled out: NFKC per cluster with its source span, the
    character walk, UTF-16 offsets by encoding the text before each."""
    import unicodedata

    out, spans = [], []
    for a, b in st._clusters(text):
        piece = unicodedata.normalize("NFKC", text[a:b]).casefold()
        out.append(piece)
        spans.extend([(a, b)] * len(piece))
    segs = st._walk_segments("".join(out))
    found = sorted((spans[a][0], spans[b - 1][1])
                   for t in terms for a, b in st._term_spans(t, segs))
    merged: list[list[int]] = []
    for a, b in found:
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])

    def units(p: int) -> int:
        return len(text[:p].encode("utf-16-le", "surrogatepass")) // 2

    return [[units(a), units(b)] for a, b in merged]


@settings(max_examples=400, deadline=None)
@given(hs.one_of(_EDGES, hs.text(max_size=40)), hs.data())
def test_highlights_equal_the_slow_way(text, data):
    # Queries cut from the text itself (so that they match), or any text.
    i = data.draw(hs.integers(0, len(text)))
    j = data.draw(hs.integers(i, len(text)))
    q = data.draw(hs.sampled_from([text[i:j], text, data.draw(_EDGES)]))
    try:
        terms = st.parse_query(q)
    except st.BadQuery:
        return
    assert st.highlights(text, terms) == _highlights_the_slow_way(text, terms)
    assert st.segments(st.normalise(text)) == st._walk_segments(st.normalise(text))


def test_overlapping_matches_merge():
    assert st.highlights("哈哈哈", st.parse_query("哈哈")) == [[0, 3]]


def test_pinyin_full_and_initials():
    assert st.name_keys("张三") == ["张三", "zhangsan", "zs"]
    assert st.name_matches("zhangsan", "张三")
    assert st.name_matches("zs", "张三")
    assert st.name_matches("Zhang San", "张三")
    assert st.name_matches("张", "张三")
    assert st.name_matches("ali", None, "Alice")
    assert not st.name_matches("ls", "张三")
