"""Settings: validation, and generated secrets kept in files under var/."""

from __future__ import annotations

import stat
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from app.config import load_settings, local_secret_file


def test_processes_starting_at_once_agree_on_one_generated_secret(tmp_path):
    path = tmp_path / "var" / "secret"
    n = 16
    barrier = threading.Barrier(n)
    made = iter(range(1000))
    lock = threading.Lock()

    def make() -> str:
        with lock:
            return f"value-{next(made)}"

    def start() -> str:
        barrier.wait()
        return local_secret_file(path, make)

    with ThreadPoolExecutor(n) as pool:
        seen = list(pool.map(lambda _: start(), range(n)))
    stored = path.read_text()
    assert stored.startswith("value-")
    assert seen == [stored] * n  # nobody kept a value of its own, nobody read a partial file
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["secret"]  # no temporary file left


def test_a_generated_secret_is_kept_across_restarts(tmp_path):
    path = tmp_path / "secret"
    first = local_secret_file(path, lambda: "first")
    assert local_secret_file(path, lambda: "second") == first == "first"


def test_a_generated_secret_is_on_the_disk_before_it_is_used(tmp_path, flushed):
    """The data keys encrypt emails and media as soon as they exist: a crash of
    the machine must not take back the file (or the directories made for it)."""
    path = tmp_path / "var" / "keys" / "data_keys"
    assert local_secret_file(path, lambda: "k1") == "k1"
    assert len(flushed) == 4, flushed
    assert flushed[0].startswith(f"{path.parent}/.data_keys.")  # the value, before its link
    assert flushed[1:] == [str(path.parent), str(tmp_path / "var"), str(tmp_path)]
    flushed.clear()
    assert local_secret_file(path, lambda: "k2") == "k1"
    assert flushed == []  # read back: nothing to flush


def test_a_negative_database_command_timeout_is_refused():
    with pytest.raises(ValueError, match="DATABASE_COMMAND_TIMEOUT"):
        load_settings(environ={"DATABASE_COMMAND_TIMEOUT": "-1", "SECRET_KEY": "x" * 32})
    assert load_settings(environ={"DATABASE_COMMAND_TIMEOUT": "0", "SECRET_KEY": "x" * 32}
                         ).database_command_timeout == 0


@pytest.mark.parametrize("value", ["0", "-5"])
def test_a_listen_backlog_below_one_is_refused(value):
    with pytest.raises(ValueError, match="LISTEN_BACKLOG must be at least 1"):
        load_settings(environ={"LISTEN_BACKLOG": value, "SECRET_KEY": "x" * 32})


@pytest.mark.parametrize("value", ["0", "-1"])
def test_a_stall_timeout_not_above_zero_is_refused(value):
    with pytest.raises(ValueError, match="HTTP_STALL_TIMEOUT must be above 0"):
        load_settings(environ={"HTTP_STALL_TIMEOUT": value, "SECRET_KEY": "x" * 32})


@pytest.mark.parametrize("value", ["-0.1", "5.5"])
def test_a_message_order_hold_outside_zero_to_five_is_refused(value):
    with pytest.raises(ValueError, match="MESSAGE_ORDER_HOLD is seconds from 0"):
        load_settings(environ={"MESSAGE_ORDER_HOLD": value, "SECRET_KEY": "x" * 32})


@pytest.mark.parametrize("queue", [{"REDIS_URL": "redis://127.0.0.1:1/0"}, {}],
                         ids=["queue", "one-process"])
def test_message_order_hold_reaches_the_manager(queue):
    from app.realtime import build_sio

    on = load_settings(environ={**queue, "SECRET_KEY": "x" * 32})
    off = load_settings(environ={**queue, "SECRET_KEY": "x" * 32, "MESSAGE_ORDER_HOLD": "0"})
    assert build_sio(on).manager.order.hold == 0.1
    assert build_sio(off).manager.order is None
