"""The web client's JavaScript checks, run under pytest so `scripts/test` runs them:
the store's unit tests (node's test runner, tests/js/), the import-graph rules
(no cycles, lib → store → views → entry), and that every error code the server
can send has an English and a Chinese text."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Node.js builds the web client, so scripts/test needs it anyway: missing, these fail.
NODE = shutil.which("node") or "node"


def run_node(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([NODE, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_store_unit_tests_pass():
    out = run_node("--test", "--test-reporter=tap", "tests/js/")
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert re.search(r"^# pass [1-9]\d*$", out.stdout, re.M), out.stdout[-2000:]
    assert re.search(r"^# fail 0$", out.stdout, re.M)


def test_static_has_no_import_cycles_and_respects_layers():
    out = run_node("scripts/check-web-imports.mjs")
    assert out.returncode == 0, out.stderr
    assert "no import cycles" in out.stdout


def test_import_check_catches_a_cycle_and_an_upward_import(tmp_path):
    """The checker itself can fail: a store module importing a view, and a cycle."""
    js = tmp_path / "js"
    for d in ("lib", "store", "views"):
        (js / d).mkdir(parents=True)
    (js / "main.js").write_text('import { a } from "./store/a.js"; a();\n')
    (js / "store" / "a.js").write_text('import { v } from "../views/v.js"; export function a() { v(); }\n')
    (js / "views" / "v.js").write_text('import { b } from "./w.js"; export function v() { b(); }\n')
    (js / "views" / "w.js").write_text('import { v } from "./v.js"; export function b() { v(); }\n')
    out = run_node("scripts/check-web-imports.mjs", str(js / "main.js"))
    assert out.returncode == 1
    assert "store/a.js imports views/v.js, a layer above it" in out.stderr
    assert "import cycle:" in out.stderr and "views/v.js" in out.stderr


def server_error_codes() -> set[str]:
    """Every `code` the server can put in an error (REST or ack), read from the code base."""
    codes: set[str] = set()
    for path in (ROOT / "app").rglob("*.py"):
        text = path.read_text()
        codes |= set(re.findall(r'code, status, default_message = "([a-z_]+)"', text))
        codes |= set(re.findall(r'"code": "([a-z_]+)"', text))
        codes |= set(re.findall(r'\bcode="([a-z_]+)"', text))
        codes |= {f"{f}_taken" for f in re.findall(r'conflict_on\("([a-z_]+)"', text)}
    http = (ROOT / "app" / "api" / "http.py").read_text()
    codes |= set(re.findall(r'\d{3}: "([a-z_]+)"', http))
    # conflict_on(field) is called with the field in a variable in places: the documented ones.
    codes |= {"email_taken", "phone_taken", "username_taken"}
    return codes


def test_every_server_error_code_has_a_text_in_both_languages():
    i18n = (ROOT / "static" / "js" / "lib" / "i18n.js").read_text()
    en, zh = i18n.split("const zh = {", 1)
    codes = server_error_codes()
    assert {"invalid", "not_contact", "rate_limited", "invite_expired"} <= codes
    for table, name in ((en, "en"), (zh, "zh")):
        missing = sorted(c for c in codes if f"err_{c}:" not in table)
        assert not missing, f"{name} has no text for {missing}"
    # The Chinese texts are Chinese, not copies of the English ones.
    for code in codes:
        text = re.search(rf'err_{code}: "([^"]*)"', zh).group(1)
        assert re.search(r"[\u4e00-\u9fff]", text), (code, text)
