"""SidRoomIndex (app/realtime/rooms.py): the same room table as python-socketio's
own manager after every operation, with disconnects that do not scan every room."""

import random

import socketio

from app.realtime.rooms import SidRoomIndex


class Indexed(SidRoomIndex, socketio.AsyncManager):
    pass


def table(mgr) -> dict:
    return {ns: {room: dict(members) for room, members in rooms.items()}
            for ns, rooms in mgr.rooms.items()}


async def test_same_rooms_as_the_library_through_a_random_run():
    plain, fast = socketio.AsyncManager(), Indexed()
    for m in (plain, fast):
        srv = socketio.AsyncServer(client_manager=m)
        ids = iter(range(10**6))
        srv.eio.generate_id = lambda ids=ids: f"s{next(ids)}"  # the same sids in both
        m.initialize()
    rnd = random.Random(5)
    live: list[tuple[str, str]] = []  # (namespace, sid), identical in both
    for step in range(3000):
        op = rnd.random()
        if op < 0.3 or not live:
            ns = rnd.choice(["/chat", "/"])
            eio = f"e{step}"
            a = await plain.connect(eio, ns)
            assert await fast.connect(eio, ns) == a
            live.append((ns, a))
        elif op < 0.6:
            ns, sid = rnd.choice(live)
            room = f"user:{rnd.randrange(20)}"
            await plain.enter_room(sid, ns, room)
            await fast.enter_room(sid, ns, room)
        elif op < 0.75:
            ns, sid = rnd.choice(live)
            room = f"user:{rnd.randrange(20)}"
            await plain.leave_room(sid, ns, room)
            await fast.leave_room(sid, ns, room)
        elif op < 0.8:
            ns = rnd.choice(["/chat", "/"])
            room = f"user:{rnd.randrange(20)}"
            await plain.close_room(room, ns)
            await fast.close_room(room, ns)
        else:
            ns, sid = live.pop(rnd.randrange(len(live)))
            plain.pre_disconnect(sid, ns)
            fast.pre_disconnect(sid, ns)
            assert not fast.is_connected(sid, ns)
            await plain.disconnect(sid, ns)
            await fast.disconnect(sid, ns)
        assert table(fast) == table(plain), step
        for ns, sid in live[-5:]:
            assert sorted(fast.get_rooms(sid, ns), key=str) == \
                sorted(plain.get_rooms(sid, ns), key=str)
    assert fast.pending_disconnect == plain.pending_disconnect == {}
    for ns, sid in live:
        await fast.disconnect(sid, ns)
    assert fast.rooms == {} and fast._sid_rooms == {}
