"""The client address of a request (app/netaddr.py): a table of real-world
headers, then properties over random chains (fixed seed), then the settings
check. Through a real nginx: tests/test_cluster.py."""

import ipaddress
import random

import pytest
import socketio

from app.config import load_settings
from app.netaddr import client_address, forwarded_for, of_environ, parse_ip, parse_networks
from app.server import SIO_KEY
from tests.factories import make_user

LOCAL = parse_networks("127.0.0.1/32, ::1")
PRIVATE = parse_networks("10.0.0.0/8,192.168.0.0/16,fd00::/8")

CASES = [
    # (peer, X-Forwarded-For, Forwarded, trusted, expected)
    # Nothing trusted: the peer, whatever the headers say.
    ("203.0.113.9", "1.2.3.4", "for=5.6.7.8", (), "203.0.113.9"),
    ("127.0.0.1", "1.2.3.4", None, (), "127.0.0.1"),
    # An untrusted peer sending headers (spoofing directly): ignored.
    ("203.0.113.9", "1.2.3.4", None, LOCAL, "203.0.113.9"),
    ("203.0.113.9", None, "for=1.2.3.4", LOCAL, "203.0.113.9"),
    # A trusted proxy: the rightmost untrusted hop.
    ("127.0.0.1", "198.51.100.7", None, LOCAL, "198.51.100.7"),
    ("127.0.0.1", " 198.51.100.7 ", None, LOCAL, "198.51.100.7"),
    ("127.0.0.1", "6.6.6.6, 198.51.100.7", None, LOCAL, "198.51.100.7"),  # client-written left
    ("10.0.0.2", "6.6.6.6, 198.51.100.7, 10.0.0.5", None, PRIVATE, "198.51.100.7"),
    ("10.0.0.2", "198.51.100.7,10.1.1.1,10.0.0.5", None, PRIVATE, "198.51.100.7"),
    # Every hop trusted: the leftmost (an internal client).
    ("10.0.0.2", "10.9.9.9, 10.0.0.5", None, PRIVATE, "10.9.9.9"),
    # Trusted proxy, no header: the proxy itself.
    ("127.0.0.1", None, None, LOCAL, "127.0.0.1"),
    ("127.0.0.1", "  ", None, LOCAL, "127.0.0.1"),
    # Garbage reported by a trusted proxy ends the walk at that proxy.
    ("127.0.0.1", "unknown", None, LOCAL, "127.0.0.1"),
    ("10.0.0.2", "198.51.100.7, garbage, 10.0.0.5", None, PRIVATE, "10.0.0.5"),
    ("127.0.0.1", "1.2.3.4, <script>", None, LOCAL, "127.0.0.1"),
    ("127.0.0.1", "999.1.1.1", None, LOCAL, "127.0.0.1"),
    ("127.0.0.1", ",,,", None, LOCAL, "127.0.0.1"),
    ("127.0.0.1", "\x00\xff", None, LOCAL, "127.0.0.1"),
    # Garbage further left than the client is never reached.
    ("127.0.0.1", "garbage, 198.51.100.7", None, LOCAL, "198.51.100.7"),
    # Ports and brackets, as some balancers write them.
    ("127.0.0.1", "198.51.100.7:4711", None, LOCAL, "198.51.100.7"),
    ("127.0.0.1", "[2001:db8::1]:4711", None, LOCAL, "2001:db8::1"),
    ("127.0.0.1", "[2001:db8::1]", None, LOCAL, "2001:db8::1"),
    ("127.0.0.1", "[2001:db8::1", None, LOCAL, "127.0.0.1"),
    ("127.0.0.1", "[2001:db8::1]x", None, LOCAL, "127.0.0.1"),
    # IPv6: canonical form; IPv4-mapped becomes IPv4 (for the peer too).
    ("::1", "2001:DB8:0:0:0:0:0:1", None, LOCAL, "2001:db8::1"),
    ("::1", "::ffff:198.51.100.7", None, LOCAL, "198.51.100.7"),
    ("::ffff:127.0.0.1", "198.51.100.7", None, LOCAL, "198.51.100.7"),
    ("::ffff:203.0.113.9", "198.51.100.7", None, LOCAL, "203.0.113.9"),
    ("fd00::2", "2001:db8::7, fd12::1", None, PRIVATE, "2001:db8::7"),
    # RFC 7239 Forwarded, used when X-Forwarded-For is absent.
    ("127.0.0.1", None, "for=198.51.100.7", LOCAL, "198.51.100.7"),
    ("127.0.0.1", None, 'For="[2001:db8:cafe::17]:4711"', LOCAL, "2001:db8:cafe::17"),
    ("127.0.0.1", None, "for=192.0.2.60;proto=http;by=203.0.113.43", LOCAL, "192.0.2.60"),
    ("127.0.0.1", None, "for=6.6.6.6, for=198.51.100.7;proto=https", LOCAL, "198.51.100.7"),
    ("127.0.0.1", None, 'for="a,b", for=198.51.100.7', LOCAL, "198.51.100.7"),
    ("127.0.0.1", None, "for=unknown", LOCAL, "127.0.0.1"),
    ("127.0.0.1", None, "for=_hidden", LOCAL, "127.0.0.1"),
    ("127.0.0.1", None, "proto=https", LOCAL, "127.0.0.1"),  # no for=: not reported
    ("127.0.0.1", None, 'for="unterminated', LOCAL, "127.0.0.1"),
    # Both: X-Forwarded-For wins (the bundled nginx appends to it).
    ("127.0.0.1", "198.51.100.7", "for=6.6.6.6", LOCAL, "198.51.100.7"),
    # A peer that is no address at all (a Unix socket) is returned as is.
    ("", "1.2.3.4", None, LOCAL, ""),
    (None, "1.2.3.4", None, LOCAL, ""),
]


@pytest.mark.parametrize("peer,xff,fwd,trusted,expected", CASES)
def test_client_address_table(peer, xff, fwd, trusted, expected):
    assert client_address(peer, xff, fwd, trusted) == expected


def test_forwarded_for_parses_quoted_pairs_and_missing_for():
    assert forwarded_for('for="_gazonk", For="[2001:db8:cafe::17]:4711"') == [
        '"_gazonk"', '"[2001:db8:cafe::17]:4711"']
    assert forwarded_for("proto=http;by=1.2.3.4, for=5.6.7.8") == [None, "5.6.7.8"]
    assert forwarded_for('for="a\\"b;c", for=1.1.1.1') == ['"a\\"b;c"', "1.1.1.1"]


def test_parse_ip_rejects_non_addresses():
    for text in ("", "   ", "localhost", "1.2.3", "1.2.3.4.5", "::g", "1.2.3.4:port:x",
                 "x" * 100, '""', "[]", "[1.2.3.4]:"):
        assert parse_ip(text) is None, text


def _random_chain(rng: random.Random, trusted_pool: list[str], untrusted_pool: list[str]):
    n = rng.randint(0, 6)
    return [rng.choice(trusted_pool if rng.random() < 0.5 else untrusted_pool) for _ in range(n)]


def test_client_address_properties_over_random_chains():
    """Whatever a client writes on the left of the chain, the answer is the
    rightmost untrusted hop that trusted proxies appended, never a value that
    only the client wrote."""
    rng = random.Random(1407)
    trusted = PRIVATE
    trusted_pool = ["10.0.0.1", "10.2.3.4", "192.168.1.1", "fd00::1", "::ffff:10.0.0.9"]
    untrusted_pool = ["198.51.100.7", "203.0.113.5", "2001:db8::5", "8.8.8.8", "::ffff:1.1.1.1"]
    garbage_pool = ["unknown", "", "x", "1.2.3", "[::1", "_hidden", "1.1.1.1.1"]
    for _ in range(3000):
        client_written = [rng.choice(untrusted_pool + garbage_pool + trusted_pool)
                          for _ in range(rng.randint(0, 4))]
        real_client = rng.choice(untrusted_pool)
        proxies = [rng.choice(trusted_pool) for _ in range(rng.randint(0, 3))]
        peer = rng.choice(trusted_pool)
        # Each trusted proxy appends what it saw: the client, then proxy after proxy.
        chain = client_written + [real_client] + proxies
        xff = ", ".join(chain)
        got = client_address(peer, xff, None, trusted)
        assert got == str(parse_ip(real_client)), (peer, xff, got)
        # The same chain as RFC 7239 gives the same answer.
        fwd = ", ".join(f'for="{h}"' if ":" in h else f"for={h}" for h in chain)
        if all(h and "," not in h and '"' not in h for h in chain):
            assert client_address(peer, None, fwd, trusted) == got, fwd
        # An untrusted peer: its own address, whatever it wrote.
        outsider = rng.choice(untrusted_pool)
        assert client_address(outsider, xff, fwd, trusted) == str(parse_ip(outsider))
        # Result is always a canonical address or a trusted proxy's.
        chain2 = _random_chain(rng, trusted_pool, untrusted_pool + garbage_pool)
        got2 = client_address(peer, ", ".join(chain2), None, trusted)
        ipaddress.ip_address(got2)


def test_long_chains_are_cut():
    chain = ", ".join(["10.0.0.1"] * 10_000 + ["10.0.0.2"])
    assert client_address("10.0.0.3", chain, None, PRIVATE) == "10.0.0.1"


def test_of_environ_uses_the_aiohttp_peer_not_the_placeholder():
    class Req:
        remote = "127.0.0.1"

    environ = {"REMOTE_ADDR": "127.0.0.1", "aiohttp.request": Req(),
               "HTTP_X_FORWARDED_FOR": "198.51.100.7"}
    assert of_environ(environ, LOCAL) == "198.51.100.7"
    assert of_environ(environ, ()) == "127.0.0.1"
    Req.remote = "203.0.113.9"
    assert of_environ(environ, LOCAL) == "203.0.113.9"


def test_trusted_proxies_setting_is_checked_at_start():
    assert parse_networks("") == ()
    assert [str(n) for n in parse_networks(" 127.0.0.1/32 , ::1,10.1.2.3/8 ")] == [
        "127.0.0.1/32", "::1/128", "10.0.0.0/8"]
    assert load_settings({"TRUSTED_PROXIES": "127.0.0.1/32"}).trusted_proxies == "127.0.0.1/32"
    with pytest.raises(ValueError, match="TRUSTED_PROXIES"):
        load_settings({"TRUSTED_PROXIES": "127.0.0.1/32, nginx"})
    with pytest.raises(ValueError, match="TLS_CERT_FILE"):
        load_settings({"TLS_CERT_FILE": "/tmp/cert.pem"})


# --- in the app: REST and the Socket.IO connect use it ------------------------------------


@pytest.fixture
def settings_overrides():
    return {"trusted_proxies": "127.0.0.1/32"}


async def test_rest_login_and_socket_connect_take_the_address_from_a_trusted_proxy(
        app, client, deps, base_url):
    alice = await make_user(deps)
    r = await client.post("/api/v1/auth/login", json={"login": alice.email,
                                                       "password": alice.password},
                          headers={"X-Forwarded-For": "6.6.6.6, 198.51.100.7"})
    assert r.status == 200, await r.text()
    token = (await r.json())["access_token"]
    r = await client.get("/api/v1/auth/sessions", headers={"Authorization": f"Bearer {token}"})
    [current] = [s for s in (await r.json())["sessions"] if s["current"]]
    assert current["ip"] == "198.51.100.7"

    sio = socketio.AsyncClient(reconnection=False)
    await sio.connect(base_url, namespaces=["/chat"], auth={"token": token},
                      transports=["websocket"], wait_timeout=5,
                      headers={"X-Forwarded-For": "2001:db8::7"})
    try:
        chat = app[SIO_KEY].namespace_handlers["/chat"]
        [conn] = [c for c in chat.conns.values() if c.user_id == alice.user_id]
        assert conn.ip == "2001:db8::7"
    finally:
        await sio.disconnect()
