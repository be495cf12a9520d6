"""A json-module look-alike on msgspec for python-socketio (`AsyncServer(json=...)`).

Socket.IO expects `dumps` to return str; msgspec returns bytes, so decode.
"""

import msgspec

_encoder = msgspec.json.Encoder()
_decode = msgspec.json.decode


def dumps(obj, **_kwargs) -> str:
    return _encoder.encode(obj).decode()


def loads(data, **_kwargs):
    return _decode(data)
