"""Fast protobuf-to-JSON conversion, value-identical to protobuf's own ``json_format``.

Ray's HTTP publisher converts every event with ``json.loads(MessageToJson(event,
always_print_fields_with_no_presence=True, preserving_proto_field_name=flag))``, which costs
roughly 75-140 µs per event. :class:`JsonConverter` produces the same *value* (equal after
``json.loads``; key order and whitespace may differ, and JSON objects are unordered) for any
message type, and encodes with orjson.

How: for each message type reachable from the one being converted we generate, once, a Python
function from its descriptor (source text, ``exec``-ed; ``JsonConverter.source_of`` shows it).
It is one dict display that reads every implicit-presence field by attribute (unset ones read
as their defaults, which is what protobuf prints, ``[]`` and ``{}`` included), then ``HasField``
for each sub-message and proto3 ``optional`` field and one ``WhichOneof`` per real oneof, so
unset ones stay absent and only the set member of a oneof appears. ``RayEvent`` has no oneof:
each of its 17 payload fields is checked, and all that are set appear. On upb an attribute read
costs about half of what ``ListFields()`` costs per field, so reading beats walking
``ListFields()`` even for ``RayEvent``; only types with extension ranges, whose extensions are
only discoverable through ``ListFields()``, use that walk with a per-field table of conversions.

Strings, bools, 32-bit integers and string-to-string maps need no conversion; bytes become
padded standard base64, 64-bit integers strings, enums their names (unknown numbers stay
integers), non-finite doubles the strings protobuf uses, ``Timestamp`` RFC 3339 with 0, 3, 6 or 9
fractional digits. Unknown fields are ignored, as protobuf's printer ignores them.

Whenever the fast path cannot produce a value (an out-of-range ``Timestamp`` is the realistic
case) the whole message is handed to protobuf's converter, so the outcome, value or exception,
is protobuf's. Well-known types other than ``Timestamp`` (wrappers, ``Duration``, ``Struct``,
``Any``...) do not occur in Ray's schema and are always converted by protobuf.

Cost, measured with ``benchmarks/bench_converter.py`` (5000 realistic Ray events in batches of
1000, CPython 3.11, upb, CPU time on a shared 2-CPU VM): about 7-8 µs per event for
:meth:`JsonConverter.dumps` and :meth:`JsonConverter.dumps_serialized` (which also parses each
event), orjson encoding included, against 75-80 µs for protobuf's path: roughly 10-11 times
faster. Nearly all of it is upb access (attribute reads at ~30-50 ns, ``HasField``, wrapper
objects for sub-messages and repeated elements; ``RayEvent`` alone, with its 18 presence checks,
is ~2 µs) plus ``Timestamp`` formatting (~0.3 µs each). A publisher batch of 1000 events thus
holds the thread for 7-8 ms; trio code that must stay responsive meanwhile can use
:meth:`JsonConverter.dumps_serialized_cooperatively`, which checkpoints between chunks.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Final, TypeVar, cast, final

import orjson
import trio
from google.protobuf import json_format

from trio_events import pb

if TYPE_CHECKING:
    from google.protobuf.descriptor import Descriptor
    from google.protobuf.message import Message

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "JsonConverter",
    "chunked",
]

from trio_events.agent._codegen import _Compiler

_T = TypeVar("_T")
_Convert = Callable[[Any], Any]

#: Events converted between two checkpoints by
#: :meth:`JsonConverter.dumps_serialized_cooperatively` (about a millisecond of work).
DEFAULT_CHUNK_SIZE: Final = 100

# -- public API -------------------------------------------------------------------------------

# What protobuf's printer raises for values it refuses (out-of-range Timestamp or Duration, NaN
# in a Struct, unknown closed enum number, unresolvable Any). When the fast path raises one of
# these, protobuf converts the message instead and so decides the outcome, value or exception.
_FALL_BACK_ON: Final = (ValueError, TypeError, json_format.Error)


@final
class JsonConverter:
    """Converts protobuf messages to the JSON values protobuf's ``MessageToJson`` produces.

    ``to_dict(m) == json.loads(MessageToJson(m, always_print_fields_with_no_presence=True,
    preserving_proto_field_name=flag))`` for every message ``m`` whose JSON form is an object.
    Converters are generated per message type on first use and cached; an instance is safe to
    share between threads.
    """

    def __init__(self, *, preserving_proto_field_name: bool = False) -> None:
        self._preserving_proto_field_name = preserving_proto_field_name
        self._compiler = _Compiler(preserving_proto_field_name=preserving_proto_field_name)
        self._by_class: dict[type[Message], _Convert] = {}

    @property
    def preserving_proto_field_name(self) -> bool:
        return self._preserving_proto_field_name

    def to_value(self, message: Message) -> Any:
        """The JSON value of ``message``: a dict, or a str, list... for some well-known types."""
        try:
            return self._converter(message.__class__)(message)
        except _FALL_BACK_ON:
            return self._protobuf_value(message)

    def to_dict(self, message: Message) -> dict[str, Any]:
        """The JSON object of ``message``, e.g. one element of the HTTP publisher's POST body."""
        value = self.to_value(message)
        if not isinstance(value, dict):
            raise TypeError(
                f"the JSON form of {message.DESCRIPTOR.full_name} is not an object; use to_value()"
            )
        return value

    def dumps(self, messages: Iterable[Message]) -> bytes:
        """A JSON array of the converted messages, e.g. ``b'[{...},{...}]'``."""
        return orjson.dumps(self._values(list(messages)))

    def dumps_serialized(self, blobs: Iterable[bytes]) -> bytes:
        """Like :meth:`dumps` for serialized ``RayEvent`` messages (as the buffer holds them).

        Raises ``google.protobuf.message.DecodeError`` if a blob is not a valid ``RayEvent``.
        """
        return orjson.dumps(self._parse_and_convert(blobs))

    async def dumps_serialized_cooperatively(
        self, blobs: Iterable[bytes], *, chunk_size: int = DEFAULT_CHUNK_SIZE
    ) -> bytes:
        """:meth:`dumps_serialized` with a trio checkpoint after every ``chunk_size`` events.

        A batch of 1000 events is a few milliseconds of pure CPU; the checkpoints keep the event
        loop (the gRPC server, other publishers) responsive and make the call cancellable.
        """
        converted: list[Any] = []
        for chunk in chunked(blobs, chunk_size):
            converted += self._parse_and_convert(chunk)
            await trio.lowlevel.checkpoint()
        return orjson.dumps(converted)

    def source_of(self, descriptor: Descriptor) -> str:
        """The generated Python source of the converter for ``descriptor`` (for debugging)."""
        return self._compiler.source(descriptor)

    def _converter(self, cls: type[Message]) -> _Convert:
        convert = self._by_class.get(cls)
        if convert is None:
            descriptor = cast("Descriptor", cls.DESCRIPTOR)
            convert = self._by_class[cls] = self._compiler.converter(descriptor)
        return convert

    def _values(self, messages: list[Message]) -> list[Any]:
        # The per-message lookup and try of to_value are a measurable share of the cost, so
        # the batch runs without them and is redone message by message only if one fails.
        try:
            if len({m.__class__ for m in messages}) == 1:
                convert = self._converter(messages[0].__class__)
                return [convert(m) for m in messages]
            return [self._converter(m.__class__)(m) for m in messages]
        except _FALL_BACK_ON:
            return [self.to_value(m) for m in messages]

    def _parse_and_convert(self, blobs: Iterable[bytes]) -> list[Any]:
        parse = pb.RayEvent.FromString
        convert = self._converter(pb.RayEvent)
        blobs = blobs if isinstance(blobs, list) else list(blobs)
        try:
            return [convert(parse(blob)) for blob in blobs]
        except _FALL_BACK_ON:
            return [self.to_value(parse(blob)) for blob in blobs]

    def _protobuf_value(self, message: Message) -> Any:
        # MessageToDict gives the same value as json.loads(MessageToJson(...)) and raises the
        # same exceptions, without the text round trip.
        return json_format.MessageToDict(
            message,
            always_print_fields_with_no_presence=True,
            preserving_proto_field_name=self._preserving_proto_field_name,
        )


def chunked(items: Iterable[_T], size: int) -> Iterator[list[_T]]:
    """Consecutive lists of at most ``size`` items (the last may be shorter; none is empty)."""
    if size < 1:
        raise ValueError(f"chunk size must be at least 1, got {size}")
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk
