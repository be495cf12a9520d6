"""Fuzzing a real server: schemathesis against the OpenAPI document (REST) and
hypothesis-generated payloads at every Socket.IO event of /chat, as a signed-in
user with real data (a direct chat, a group, messages) to aim at.

Asserted for every case: no 5xx, no `internal` ack, and afterwards no
traceback (nor any ERROR record) in the log and a healthy server.

The normal run is small and reproducible (a fixed seed, `derandomize`).
`FUZZ_EXAMPLES=2000 scripts/test tests/test_fuzz.py` runs a longer one, and
`FUZZ_SEED=n` picks another sequence (see README, "Fuzzing").
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import uuid
from collections import Counter

import aiohttp
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from msgspec import inspect as mi
from schemathesis import GenerationMode

from app.api.openapi import build
from app.realtime.chat import EVENTS
from app.services import conversations as convs
from app.services import groups, history, messaging
from tests.factories import call, connect, make_contacts, make_user

REST_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))
SOCKET_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "0")) or 150
SEED = int(os.environ.get("FUZZ_SEED", "20261204"))
# A long run may take a while: scale pytest-timeout with it.
pytestmark = [pytest.mark.heavy,
              pytest.mark.timeout(120 + 2 * max(REST_EXAMPLES, SOCKET_EXAMPLES))]

# Kept to the end: they end the fuzzing user's session.
LAST = {("POST", "/api/v1/auth/logout"), ("DELETE", "/api/v1/auth/sessions/{session_id}")}


def _settings(n: int):
    return settings(max_examples=n, deadline=None, database=None, derandomize="FUZZ_SEED" not in os.environ,
                    suppress_health_check=list(HealthCheck), print_blob=True)


async def assert_healthy(base_url: str) -> None:
    async with aiohttp.ClientSession() as session, session.get(base_url + "/healthz") as r:
        assert r.status == 200


def assert_clean_log(caplog) -> None:
    bad = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not bad, [(r.name, r.getMessage(), r.exc_text and r.exc_text[-600:]) for r in bad]


async def _world(deps):
    """A user with contacts, a direct chat, a group and messages: ids worth hitting."""
    me, friend, other = await make_user(deps), await make_user(deps), await make_user(deps)
    await make_contacts(deps, me, friend)
    await make_contacts(deps, me, other)
    conv, _ = await convs.get_or_create_direct(deps, me.user_id, friend.user_id)
    g = await groups.create_group(deps, me.user_id, groups.CreateIn(
        name="fuzz", member_ids=[friend.user_id, other.user_id]))
    ids = {"conversation_id": [str(conv.id), g["id"]], "user_id": [friend.user_id, other.user_id],
           "message_id": [], "media_id": []}
    invite = await groups.create_invite(deps, me.user_id, g["id"], groups.InviteIn())
    ids["token"] = [invite["token"]]
    ids["group_id"] = [g["id"]]
    for cid in ids["conversation_id"]:
        m = await messaging.send_from_payload(deps, me.user_id, {
            "conversation_id": cid, "client_msg_id": uuid.uuid4().hex, "text": "hello"})
        ids["message_id"].append(m["id"])
    return me, ids


HUGE_INTS = [2**63 - 1, 2**63, 2**64, 10**30, -(2**63) - 1, -(10**30)]
HOSTILE_STRINGS = ["9" * 30, str(2**63), str(2**63 - 1), "-1", "0", "\u0000", "a\u0000b",
                   "\u3164", "\u200b\ufeff", "\u202eevil", "%", "..", "a" * 300, "null",
                   "' OR 1=1 --", "{}", "1e400", "NaN", "\u0663", "\U0001f600", " ",
                   "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"]
HOSTILE_JSON = [*HUGE_INTS, 1e308, -1e308, [], {}, True, None, "", *HOSTILE_STRINGS,
                {"a": [[[[[[[[]]]]]]]]}, [[[]]] * 3]


# --- REST ---------------------------------------------------------------------------


def _fuzz_rest(base_url: str, headers: dict, ids: dict, examples: int) -> tuple[int, list]:
    schema = schemathesis.openapi.from_dict(build())
    ops = [r.ok() for r in schema.get_all_operations()]
    ops.sort(key=lambda op: (op.method.upper(), op.path) in LAST)
    assert len(ops) == len(build_ops()), "every documented operation is fuzzed"
    count, failures = 0, []
    statuses: Counter = Counter()
    session = requests.Session()

    for op in ops:
        strategy = st.one_of(op.as_strategy(generation_mode=GenerationMode.POSITIVE),
                             op.as_strategy(generation_mode=GenerationMode.NEGATIVE))

        @seed(SEED)
        @_settings(examples)
        @given(case=strategy, real=st.data())
        def run(case, real):
            nonlocal count
            count += 1
            # Half the time, point the path at things that exist (the chats, the
            # group, the messages, the people of _world) so handlers get past 404.
            for name in list(case.path_parameters or {}):
                pool = ids.get(name) or (ids["conversation_id"] if name == "group_id" else None)
                if pool and real.draw(st.booleans()):
                    case.path_parameters[name] = real.draw(st.sampled_from(pool))
            r = case.call(base_url=base_url, session=session, headers=headers, timeout=30)
            statuses[r.status_code] += 1
            if r.status_code >= 500:
                failures.append((case.method, case.path, r.status_code, r.text[:300],
                                 case.as_curl_command(headers=headers)))

        run()
    print(f"\nREST fuzz statuses: {dict(sorted(statuses.items()))}")
    return count, failures


def _fill(path: str, value: str, ids: dict) -> str:
    from urllib.parse import quote

    out = []
    for part in path.split("/"):
        if part.startswith("{"):
            pool = ids.get(part[1:-1]) or ids.get("conversation_id")
            out.append(quote(value, safe="") if value is not None else pool[0])
        else:
            out.append(part)
    return "/".join(out)


def _hostile_rest(base_url: str, headers: dict, ids: dict) -> tuple[int, list]:
    """Every documented operation with each hostile value in each path parameter,
    query argument and body field in turn (the rest kept valid-looking)."""
    doc = build()
    schemas = doc["components"]["schemas"]
    session = requests.Session()
    count, failures = 0, []

    def send(method, url, **kw):
        nonlocal count
        count += 1
        kw.setdefault("headers", headers)
        r = session.request(method, url, timeout=30, **kw)
        if r.status_code >= 500:
            failures.append((method, url[:200], kw.get("json"), r.status_code, r.text[:200]))

    for path, item in doc["paths"].items():
        for method, op in item.items():
            if (method.upper(), path) in LAST:
                continue
            method = method.upper()
            params = op.get("parameters", [])
            names = [p["name"] for p in params if p["in"] == "path"]
            base = base_url + _fill(path, None, ids)
            for value in HOSTILE_STRINGS:
                if names:
                    send(method, base_url + _fill(path, value, ids))
                for q in (p["name"] for p in params if p["in"] == "query"):
                    send(method, base, params={q: value})
            body = op.get("requestBody", {}).get("content", {}).get("application/json")
            if body:
                props = schemas[body["schema"]["$ref"].rsplit("/", 1)[1]]["properties"]
                for prop in props:
                    for value in HOSTILE_JSON:
                        send(method, base, json={prop: value})
                send(method, base, data=b'{"x": ' + b"[" * 5000 + b"]" * 5000 + b"}",
                     headers={**headers, "Content-Type": "application/json"})
    return count, failures


async def test_rest_hostile_values(deps, base_url, caplog):
    me, ids = await _world(deps)
    headers = {"Authorization": f"Bearer {me.access_token}"}
    count, failures = await asyncio.to_thread(_hostile_rest, base_url, headers, ids)
    print(f"\nREST hostile values: {count} requests")
    assert count > 500
    assert not failures, failures[:5]
    await assert_healthy(base_url)
    assert_clean_log(caplog)


def build_ops() -> list:
    return [(m, p) for p, item in build()["paths"].items() for m in item]


async def test_rest_api_fuzz(deps, base_url, caplog):
    me, ids = await _world(deps)
    headers = {"Authorization": f"Bearer {me.access_token}"}
    count, failures = await asyncio.to_thread(_fuzz_rest, base_url, headers, ids, REST_EXAMPLES)
    print(f"\nREST fuzz: {count} cases")
    assert count >= len(build_ops()) * min(REST_EXAMPLES, 2)
    assert not failures, failures[:5]
    await assert_healthy(base_url)
    assert_clean_log(caplog)


# --- Socket.IO ----------------------------------------------------------------------

_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(min_value=2**63 - 2),
                  st.floats(allow_nan=True), st.text(max_size=30),
                  st.sampled_from(["", "\u0000", "\u3164", "\u202e", "\ufeff", "9" * 40, "-1",
                                   "null", "\ud7ff", "a" * 70]))
_json = st.recursive(_leaf, lambda c: st.lists(c, max_size=4) | st.dictionaries(
    st.text(max_size=12), c, max_size=4), max_leaves=12)
# The struct each /chat event decodes its payload into: payloads are generated
# from it (valid-looking values, real ids) and then mutated. An event added later
# without an entry here is still fuzzed, with arbitrary JSON.
EVENT_TYPES = {
    "message:send": messaging.SendIn,
    "sync": history.SyncIn,
    "history": history.HistoryIn,
    "message:read": messaging.ReadIn,
    "message:recall": messaging.MessageRef,
    "message:delete": messaging.MessageRef,
    "typing": messaging.TypingIn,
}


def _from_type(t, name: str, ids: dict):
    """A strategy of mostly valid values for a msgspec type (see msgspec.inspect)."""
    if isinstance(t, mi.StrType):
        pool = ids.get(name) or (ids["message_id"] if name == "reply_to" else None)
        text = st.one_of(st.text(max_size=t.max_length or 40), st.sampled_from(HOSTILE_STRINGS))
        # Mostly real ids, so the services behind the validation get exercised too.
        return st.one_of(st.sampled_from(pool), st.sampled_from(pool), text) if pool else text
    if isinstance(t, mi.IntType):
        lo = t.ge if t.ge is not None else -5
        hi = t.le if t.le is not None else 10**6
        return st.one_of(st.integers(min_value=lo, max_value=min(hi, lo + 50)),
                         st.sampled_from([lo, hi, lo - 1, hi + 1]), st.sampled_from(HUGE_INTS))
    if isinstance(t, mi.BoolType):
        return st.booleans()
    if isinstance(t, mi.LiteralType):
        return st.sampled_from(list(t.values))
    if isinstance(t, mi.ListType):
        return st.lists(_from_type(t.item_type, name, ids), max_size=4)
    if isinstance(t, mi.DictType):
        return st.dictionaries(_from_type(t.key_type, "conversation_id", ids),
                               _from_type(t.value_type, "seq", ids), max_size=3)
    if isinstance(t, mi.UnionType):
        return st.one_of([_from_type(x, name, ids) for x in t.types])
    if isinstance(t, mi.NoneType):
        return st.none()
    return _json


def _struct_payloads(struct, ids: dict):
    fields = mi.type_info(struct).fields

    @st.composite
    def build(draw):
        out = {}
        for f in fields:
            if f.required or draw(st.booleans()):
                out[f.encode_name] = draw(_from_type(f.type, f.name, ids))
        mutation = draw(st.sampled_from(["none"] * 6 + ["drop", "garble", "extra"]))
        if mutation == "drop" and out:
            out.pop(draw(st.sampled_from(sorted(out))))
        elif mutation == "garble" and out:
            out[draw(st.sampled_from(sorted(out)))] = draw(_json)
        elif mutation == "extra":
            out[draw(st.text(max_size=10))] = draw(_json)
        return out

    return build()


def _payloads(event: str, ids: dict):
    struct = EVENT_TYPES.get(event)
    if struct is None:
        return _json
    return st.one_of(_struct_payloads(struct, ids), _struct_payloads(struct, ids),
                     _struct_payloads(struct, ids), _json)


async def test_socket_events_fuzz(deps, base_url, caplog):
    me, ids = await _world(deps)
    loop = asyncio.get_running_loop()
    sock = await connect(base_url, me.access_token)
    acks: list = []
    bad: list = []
    events = sorted(EVENTS) + ["no:such:event"]
    lock = threading.Lock()

    async def emit(event, payload):
        nonlocal sock
        if not sock.connected:  # e.g. disconnected by flood control: come back
            sock = await connect(base_url, me.access_token)
        return await call(sock, event, payload, timeout=20)

    @seed(SEED)
    @_settings(SOCKET_EXAMPLES * len(events))
    @given(data=st.data())
    def run(data):
        event = data.draw(st.sampled_from(events))
        payload = data.draw(_payloads(event, ids))
        ack = asyncio.run_coroutine_threadsafe(emit(event, payload), loop).result(30)
        with lock:
            acks.append(ack)
        if not isinstance(ack, dict) or not isinstance(ack.get("ok"), bool) or (
                not ack["ok"] and ack["error"]["code"] == "internal"):
            bad.append((event, payload, ack))

    try:
        await asyncio.to_thread(run)
    finally:
        await sock.disconnect()
    print(f"\nSocket.IO fuzz: {len(acks)} events over {len(events)} names")
    assert len(acks) >= len(events)
    assert not bad, bad[:5]
    codes = Counter("ok" if a["ok"] else a["error"]["code"] for a in acks)
    print(f"Socket.IO fuzz acks: {dict(codes)}")
    assert "invalid" in codes  # the fuzzer did reach the validation
    await assert_healthy(base_url)
    assert_clean_log(caplog)


@pytest.fixture(autouse=True)
def _quiet_hypothesis_output(capsys):
    yield
