"""What a delivered receipt costs the server, next to a message.

    .venv/bin/python -m bench.receipt_cost [N]

One `python -m app serve` on SQLite; one sender and one receiver socket. Sends N
messages one at a time (each waits for its delivery), then N receipts that each move
the mark by one, N receipts that move nothing, N unknown events (the dispatcher's
own cost). Reports the server process's CPU time (utime + stime) per event, so load
from other processes on the machine changes wall time, not the figures (much).
Sequential on purpose: no batching in the writer, the worst case for a message.
"""
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import aiohttp
import socketio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.cluster_helpers import GENEROUS_LIMITS, SECRET, Worker  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def cpu(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")

async def main():
    tmp = Path(tempfile.mkdtemp(prefix="parley-receipt-cost-"))  # noqa: ASYNC240
    db = tmp / "cost.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "REDIS_", "TEST_"))}
    env.update(DATABASE_URL=f"sqlite://{db}", SECRET_KEY=SECRET, MEDIA_ROOT=str(tmp / "media"),
               LOG_LEVEL="WARNING", **GENEROUS_LIMITS)
    # Before anything runs: blocking is fine here.
    subprocess.run([sys.executable, "-m", "app", "migrate"], cwd=ROOT, env=env,  # noqa: ASYNC221
                   check=True, capture_output=True)
    w = Worker("cost", env, tmp)
    w.start()
    await w.wait_ready()
    try:
        async with aiohttp.ClientSession() as http:
            async def reg(n):
                async with http.post(w.url + "/api/v1/auth/register", json={
                        "email": f"{n}{uuid.uuid4().hex[:6]}@example.org", "password": "correct horse battery",
                        "display_name": n}) as r:
                    return await r.json()
            a, b = await reg("a"), await reg("b")
            ha = {"Authorization": f"Bearer {a['access_token']}"}
            hb = {"Authorization": f"Bearer {b['access_token']}"}
            async with http.post(w.url + "/api/v1/contacts/requests", json={"user_id": b["user"]["id"]}, headers=ha) as r:
                req = (await r.json())["request"]
            async with http.post(w.url + f"/api/v1/contacts/requests/{req['id']}/accept", headers=hb) as r:
                await r.json()
            async with http.post(w.url + "/api/v1/conversations/direct", json={"user_id": b["user"]["id"]}, headers=ha) as r:
                cid = (await r.json())["conversation"]["id"]
        sa, sb = socketio.AsyncClient(), socketio.AsyncClient()
        got = asyncio.Queue()
        sb.on("message:new", lambda m: got.put_nowait(m), namespace="/chat")
        await sa.connect(w.url, namespaces=["/chat"], auth={"token": a["access_token"]}, transports=["websocket"])
        await sb.connect(w.url, namespaces=["/chat"], auth={"token": b["access_token"]}, transports=["websocket"])
        pid = w.proc.pid
        N = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
        async def sends(n, tag):
            for i in range(n):
                await sa.call("message:send", {"conversation_id": cid, "client_msg_id": f"{tag}-{i}", "text": f"m {i}"}, namespace="/chat")
                await got.get()
        async def delivered(n, base):
            for i in range(n):
                await sb.call("message:delivered", {"conversation_id": cid, "up_to_seq": base + i + 1}, namespace="/chat")
        await sends(300, "warm")
        out = []
        for rnd in range(3):
            c0 = cpu(pid)
            await sends(N, f"s{rnd}")
            c1 = cpu(pid)
            # every receipt moves the mark by one (the common case: a fresh mark each second)
            await sa.call("sync", {"cursors": {}}, namespace="/chat")
            base = 300 + rnd * N
            c2 = cpu(pid)
            await delivered(N, base)
            c3 = cpu(pid)
            c4 = cpu(pid)
            for _ in range(N):
                await sb.call("message:delivered", {"conversation_id": cid, "up_to_seq": 1}, namespace="/chat")
            c5 = cpu(pid)
            for _ in range(N):
                await sb.call("no:such", {}, namespace="/chat")
            c6 = cpu(pid)
            out.append(((c1 - c0) / N * 1e6, (c3 - c2) / N * 1e6))
            print(f"round {rnd}: send {out[-1][0]:.0f} µs CPU/message, delivered {out[-1][1]:.0f} µs CPU/receipt, "
                  f"unmoved receipt {(c5-c4)/N*1e6:.0f}, unknown event {(c6-c5)/N*1e6:.0f}", flush=True)
        await sa.disconnect()
        await sb.disconnect()
    finally:
        w.stop()
        shutil.rmtree(tmp, ignore_errors=True)

if __name__ == "__main__":
    asyncio.run(main())
