"""The PostgreSQL index entry as a tsvector literal, and the index's statistics."""

from hypothesis import given, settings
from hypothesis import strategies as hs

from app.services.search_index import token_stats_from, tsvector_literal


def _literal_the_slow_way(tokens: list[str]) -> str:
    # Each distinct token once, in first-seen order, with its positions
    # (1-based, capped at PostgreSQL's 16383, duplicates gone, sorted, at most
    # 256 of them); quotes and backslashes escaped.
    entries = []
    for tok in dict.fromkeys(tokens):
        pos = sorted({min(i + 1, 16383) for i, t in enumerate(tokens) if t == tok})[:256]
        quoted = "'" + tok.replace("\\", "\\\\").replace("'", "''") + "'"
        entries.append(quoted + ":" + ",".join(str(p) for p in pos))
    return " ".join(entries)


@settings(max_examples=300, deadline=None)
@given(hs.lists(hs.sampled_from(["a", "b", "明天", "o'k", "x\\y", "3d"]), max_size=30))
def test_tsvector_literal_equals_the_slow_way(tokens):
    assert tsvector_literal(tokens) == _literal_the_slow_way(tokens)


def test_positions_past_postgres_limit_are_capped_and_at_most_256_kept():
    tokens = ["w"] * 300 + ["x"] * 16500 + ["y"]
    lit = tsvector_literal(tokens)
    assert lit == _literal_the_slow_way(tokens)
    assert lit.endswith("'y':16383") and lit.split(" ")[0].count(",") == 255


def test_token_stats_read_pg_stats_arrays():
    # A tsvector's most_common_elem_freqs end with the lowest and highest
    # frequency; the lowest is what an unlisted token is rarer than.
    stats = token_stats_from(["的", "meeting"], [0.4, 0.05, 0.05, 0.4])
    assert stats.frequency("的") == 0.4 and stats.frequency("meeting") == 0.05
    assert stats.frequency("鲸") == 0.05
    assert token_stats_from(["a", "b"], [0.3, 0.2]).frequency("c") == 0.2
    assert token_stats_from(None, None) is None  # never analysed
    assert token_stats_from(["a", "b"], [0.3]) is None
