"""A json-module look-alike on msgspec for python-socketio (`AsyncServer(json=...)`).

Socket.IO expects `dumps` to return str; msgspec returns bytes, so decode.
`loads` raises only `ValueError` (msgspec.DecodeError), whatever the input:
Engine.IO treats a ValueError as "not JSON" and the packet decoder
(app/realtime/packets.py) turns it into an `invalid` ack. Input nested past
the decoder's depth or carrying NUL characters is refused the same way
(see app.validation.loads).
"""

import msgspec

from app.errors import Invalid
from app.validation import loads as _checked_loads

_encoder = msgspec.json.Encoder()


def dumps(obj, **_kwargs) -> str:
    return _encoder.encode(obj).decode()


def loads(data, **_kwargs):
    try:
        return _checked_loads(data)
    except Invalid as exc:
        raise msgspec.DecodeError(exc.message) from None
