"""app/validation.py: hostile JSON, 64-bit ids, and the one rule for names and
texts (invisible-only is blank; bidi controls and NUL never stay in a name) —
as pure functions, then through every place that accepts a name."""

from __future__ import annotations

import uuid

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as hs

from app.errors import Invalid
from app.services import accounts, contacts, groups
from app.validation import (
    MAX_INT64,
    Payload,
    TextUUID,
    clean_name,
    clean_optional_name,
    convert,
    convert_query,
    decode,
    int_id,
    is_blank,
    is_invisible,
    loads,
)
from tests.factories import call, connect, make_contacts, make_user

API = "/api/v1"

INVISIBLE = [
    "", " ", "\t\n", "\u200b", "\u200c\u200d", "\ufeff", "\u2060", "\u00ad", "\u3164",
    "\u115f", "\u1160", "\uffa0", "\u2800", "\u034f", "\u180e", "\u200e\u200f",
    "\u202e", "\u2066\u2069", "\u3000", "\u00a0", "\ufe0f", "\U000e0020", "\U000e0100",
    "\u3164 \u200b\ufeff\u115f",
]
VISIBLE = ["a", "李", "😀", "👨\u200d👩\u200d👧", "\u0915\u094d\u0937", "‮x", "ㄱ"]


def test_invisible_only_is_blank():
    for text in INVISIBLE:
        assert is_blank(text), repr(text)
    for text in VISIBLE:
        assert not is_blank(text), repr(text)


@given(hs.text(max_size=8))
def test_is_blank_means_every_character_is_invisible(text):
    assert is_blank(text) == all(is_invisible(ch) for ch in text)


def test_clean_name_refuses_invisible_only_names():
    for text in INVISIBLE:
        with pytest.raises(Invalid) as info:
            clean_name(text, "display_name")
        assert info.value.details == {"field": "display_name"}
        assert "blank" in info.value.message
        assert clean_optional_name(text, "remark") == ""


def test_clean_name_strips_bidi_controls_nul_and_edges():
    assert clean_name("Ali\u202ece", "n") == "Alice"
    assert clean_name("evil\u202egpj.exe", "n") == "evilgpj.exe"
    assert clean_name("\u2066a\u2069b\u202a\u202b\u202c\u202d", "n") == "ab"
    assert clean_name("a\x00b\x07c", "n") == "abc"
    assert clean_name("two\nlines\tand\u2028more", "n") == "two lines and more"
    assert clean_name("\u200b\ufeff Bob \u3164", "n") == "Bob"
    # Inner joiners are part of what is shown (emoji sequences, Indic conjuncts).
    assert clean_name("👨\u200d👩\u200d👧", "n") == "👨\u200d👩\u200d👧"
    assert clean_name("e\u0301", "n") == "é"  # NFC


def test_loads_refuses_hostile_json_as_invalid():
    for raw, word in [(b"[" * 10_000 + b"]" * 10_000, "nested too deeply"),
                      (b'{"a": "\xff"}', "UTF-8"),
                      (b'{"a": "x\\u0000"}', "NUL"),
                      (b'{"a\\u0000": 1}', "NUL"),
                      (b'[1, 2', "Malformed JSON")]:
        with pytest.raises(Invalid) as info:
            loads(raw)
        assert word in info.value.message, (raw[:20], info.value.message)
    # An escaped backslash before "u0000" is not a NUL.
    assert loads(b'{"a": "\\\\u0000"}') == {"a": "\\u0000"}


class _P(Payload):
    name: str
    n: int = 0


def test_decode_and_convert_map_every_failure_to_invalid():
    with pytest.raises(Invalid):
        decode(_P, b'{"name": "a\\u0000"}')
    with pytest.raises(Invalid):
        convert(_P, {"name": 5})
    with pytest.raises(Invalid):
        convert_query(_P, {"name": "a\x00"})


def test_int_id():
    assert int_id("42", "message_id") == 42
    assert int_id(str(MAX_INT64), "message_id") == MAX_INT64
    for bad in ("abc", "", "-1", "1.5", "１２", "0x10"):
        assert int_id(bad, "message_id") is None, bad
    for huge in (str(MAX_INT64 + 1), "9" * 40, str(10**30)):
        with pytest.raises(Invalid) as info:
            int_id(huge, "message_id")
        assert info.value.details == {"field": "message_id"}


def test_text_uuid_is_a_uuid_that_prints_its_canonical_text():
    import copy
    import pickle

    from app.services.sql import begin_and_lock_pg

    plain = uuid.uuid4()
    for written in (str(plain).upper(), f"{{{plain}}}", plain.hex):
        kept = TextUUID(written)
        assert str(kept) == str(plain) and f"{kept}" == str(plain)
        assert kept == plain and hash(kept) == hash(plain) and {plain: 1}[kept] == 1
        assert kept.hex == plain.hex and kept.int == plain.int
        for again in (pickle.loads(pickle.dumps(kept)), copy.deepcopy(kept)):
            assert again == kept and str(again) == str(plain)
    for bad in ("", "x", str(plain)[:-1], f"{plain}'; DROP TABLE messages; --"):
        with pytest.raises(ValueError):
            TextUUID(bad)
    # Ids are written into the writer's lock statement as literals.
    assert f"IN ('{plain}')" in begin_and_lock_pg([TextUUID(str(plain).upper()), plain])


def _all_payload_types():
    seen, todo = set(), [Payload]
    while todo:
        cls = todo.pop()
        for sub in cls.__subclasses__():
            if sub not in seen:
                seen.add(sub)
                todo.append(sub)
    from app.api import conversations as api_convs

    return {c for c in seen if c.__module__.startswith("app.")} | {
        api_convs.ListQuery, api_convs.HistoryQuery}


def _unbounded_ints(t, path):
    from msgspec import inspect as mi

    if isinstance(t, mi.IntType):
        if t.le is None and t.lt is None or (t.le or t.lt - 1) > MAX_INT64:
            yield path
        if t.ge is None and t.gt is None:
            yield path
    for attr in ("types", ):
        for sub in getattr(t, attr, ()):
            yield from _unbounded_ints(sub, path)
    for attr in ("item_type", "key_type", "value_type"):
        if hasattr(t, attr):
            yield from _unbounded_ints(getattr(t, attr), path)


def test_every_integer_a_client_sends_fits_64_bits():
    """The database's integers are 64-bit: an int field without bounds lets a
    client send 10**30 into a query."""
    from msgspec import inspect as mi

    assert len(_all_payload_types()) > 20
    for cls in _all_payload_types():
        info = mi.type_info(cls)
        for f in info.fields:
            bad = list(_unbounded_ints(f.type, f"{cls.__name__}.{f.name}"))
            assert not bad, bad


# --- through the services and transports ------------------------------------------


async def test_register_and_profile_refuse_invisible_display_names(client, deps):
    for name in ("\u3164", "\u200b\u200b", "\ufeff", "\u115f\u1160", "\u202e"):
        r = await client.post(f"{API}/auth/register", json={
            "email": f"{uuid.uuid4().hex[:8]}@example.org", "password": "correct horse battery",
            "display_name": name})
        body = await r.json()
        assert r.status == 400 and body["error"]["code"] == "invalid", (name, body)
        assert body["error"]["details"] == {"field": "display_name"}
    p = await make_user(deps)
    r = await client.patch(f"{API}/me", headers=p.headers, json={"display_name": "\u3164\u3164"})
    assert r.status == 400, await r.text()
    r = await client.patch(f"{API}/me", headers=p.headers,
                           json={"display_name": "Ad\u202emin\u0000"})
    assert r.status == 400  # NUL is refused at the JSON layer
    r = await client.patch(f"{API}/me", headers=p.headers, json={"display_name": "Ad\u202emin"})
    assert r.status == 200 and (await r.json())["user"]["display_name"] == "Admin"
    out = await accounts.register(deps, accounts.RegisterIn(
        email="x@example.org", password="correct horse battery", display_name="\u2066Zoë\u2069"),
        accounts.Client())
    assert out["user"]["display_name"] == "Zoë"


async def test_group_names_and_remarks(deps):
    owner, friend = await make_user(deps), await make_user(deps)
    await make_contacts(deps, owner, friend)
    for name in ("\u3164", "\u200b", " \ufeff "):
        with pytest.raises(Invalid):
            await groups.create_group(deps, owner.user_id,
                                      groups.CreateIn(name=name, member_ids=[friend.user_id]))
    g = await groups.create_group(deps, owner.user_id,
                                  groups.CreateIn(name="Te\u202eam", member_ids=[friend.user_id]))
    assert "\u202e" not in str(g) and "Team" in str(g)
    with pytest.raises(Invalid):
        await groups.update_group(deps, owner.user_id, g["id"], groups.PatchIn(name="\u3164"))
    out = await groups.update_group(deps, owner.user_id, g["id"],
                                    groups.PatchIn(name="\u2067Crew\u2069"))
    assert "Crew" in str(out) and "\u2067" not in str(out)
    c = await contacts.set_remark(deps, owner.user_id, friend.user_id,
                                  contacts.ContactPatch(remark="\u202eboss"))
    assert c["remark"] == "boss"
    c = await contacts.set_remark(deps, owner.user_id, friend.user_id,
                                  contacts.ContactPatch(remark="\u200b\u3164"))
    assert c["remark"] == ""


async def test_invisible_message_text_is_blank(deps, base_url):
    from app.services import conversations as convs

    a, b = await make_user(deps), await make_user(deps)
    await make_contacts(deps, a, b)
    conv, _ = await convs.get_or_create_direct(deps, a.user_id, b.user_id)
    s = await connect(base_url, a.access_token)
    try:
        for text in ("\u200b", "\u3164\u3164", "\ufeff \u2060", "\u115f"):
            ack = await call(s, "message:send", {"conversation_id": str(conv.id),
                                                 "client_msg_id": uuid.uuid4().hex, "text": text})
            assert ack["ok"] is False and ack["error"]["code"] == "invalid", (text, ack)
        ack = await call(s, "message:send", {"conversation_id": str(conv.id),
                                             "client_msg_id": uuid.uuid4().hex, "text": "ok"})
        assert ack["ok"], ack
    finally:
        await s.disconnect()


def test_msgspec_still_accepts_big_ints_unbounded():
    """Why the bounds above are needed: msgspec itself accepts any int."""
    assert msgspec.convert(10**30, int) == 10**30
