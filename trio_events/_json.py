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

import binascii
import datetime
import functools
import itertools
import json
import keyword
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from operator import itemgetter
from typing import TYPE_CHECKING, Any, Final, TypeVar, cast, final

import orjson
import trio
from google.protobuf import json_format, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.internal import type_checkers

from trio_events import pb

if TYPE_CHECKING:
    from google.protobuf.message import Message

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "JsonConverter",
    "ProtobufReferenceConverter",
    "chunked",
    "protobuf_reference_dumps",
]

_T = TypeVar("_T")
_Convert = Callable[[Any], Any]

#: Events converted between two checkpoints by
#: :meth:`JsonConverter.dumps_serialized_cooperatively` (about a millisecond of work).
DEFAULT_CHUNK_SIZE: Final = 100

# -- value conversions used by the generated code ---------------------------------------------

# protobuf refuses to print timestamps outside years 1..9999 (internal/well_known_types.py).
_TIMESTAMP_SECONDS_MIN: Final = -62135596800
_TIMESTAMP_SECONDS_MAX: Final = 253402300799
_EPOCH: Final = datetime.datetime(1970, 1, 1)
# Events arrive in bursts within the same second, so the calendar part is cached per second.
# The bound only keeps a stream of scattered timestamps from growing the cache forever.
_SECOND_CACHE_LIMIT: Final = 8192
_second_cache: dict[int, str] = {}


def _format_seconds(seconds: int) -> str:
    if not _TIMESTAMP_SECONDS_MIN <= seconds <= _TIMESTAMP_SECONDS_MAX:
        # Caught by JsonConverter, which then lets protobuf raise its own error.
        raise ValueError(f"Timestamp seconds {seconds} out of range")
    if len(_second_cache) >= _SECOND_CACHE_LIMIT:
        _second_cache.clear()
    text = _second_cache[seconds] = (_EPOCH + datetime.timedelta(seconds=seconds)).isoformat()
    return text


def _timestamp(ts: Any) -> str:
    """``Timestamp.ToJsonString()``: RFC 3339 UTC with the fewest of 0/3/6/9 exact digits."""
    seconds: int = ts.seconds
    nanos: int = ts.nanos
    text = _second_cache.get(seconds) or _format_seconds(seconds)
    if nanos == 0:
        return f"{text}Z"
    if not 0 < nanos < 1_000_000_000:
        raise ValueError(f"Timestamp nanos {nanos} out of range")
    # str(n + 10**k)[1:] is n zero-padded to k digits, measurably cheaper than a format spec.
    if nanos % 1_000:
        return f"{text}.{str(nanos + 1_000_000_000)[1:]}Z"
    if nanos % 1_000_000:
        return f"{text}.{str(nanos // 1_000 + 1_000_000)[1:]}Z"
    return f"{text}.{str(nanos // 1_000_000 + 1_000)[1:]}Z"


_b2a: Final = binascii.b2a_base64


def _b64(value: bytes) -> str:
    return _b2a(value, newline=False).decode()


def _non_finite(value: float) -> str:
    if value != value:  # only NaN is unequal to itself
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def _double(value: float) -> float | str:
    # x - x is 0.0 for every finite x and NaN for NaN and both infinities.
    return value if value - value == 0.0 else _non_finite(value)


def _float(value: float) -> float | str:
    # A 32-bit float arrives widened to a double; protobuf prints the shortest decimal that
    # reads back as the same 32-bit value.
    if value - value == 0.0:
        return float(type_checkers.ToShortestFloat(value))
    return _non_finite(value)


def _string_map(mapping: Mapping[str, Any]) -> dict[str, Any]:
    # Iterating keys and indexing is several times faster than items() or dict() on upb maps.
    return {key: mapping[key] for key in mapping}


def _double_map(mapping: Mapping[str, float]) -> dict[str, float | str]:
    result: dict[str, float | str] = {key: mapping[key] for key in mapping}
    for key, value in result.items():
        if isinstance(value, float) and value - value != 0.0:
            result[key] = _non_finite(value)
    return result


def _bool_key(key: bool) -> str:
    return "true" if key else "false"


class _OpenEnumNames(dict[int, Any]):
    """Enum number to JSON name; numbers this schema does not know print as the integer."""

    def __missing__(self, number: int) -> int:
        return number


class _ClosedEnumNames(dict[int, Any]):
    """For closed (proto2) enums protobuf refuses unknown numbers; we fall back and let it."""

    def __missing__(self, number: int) -> int:
        raise ValueError(f"unknown number {number} of a closed enum")


# -- code generation --------------------------------------------------------------------------

_TIMESTAMP: Final = "google.protobuf.Timestamp"


def _is_map(field: FieldDescriptor) -> bool:
    message_type = field.message_type
    return (
        message_type is not None
        and field.is_repeated
        and message_type.has_options
        and message_type.GetOptions().map_entry
    )


def _message_type(field: FieldDescriptor) -> Descriptor:
    message_type = field.message_type
    assert message_type is not None, field.full_name
    return message_type


def _read(field: FieldDescriptor) -> str:
    """Source reading ``field`` from the message ``m``."""
    if keyword.iskeyword(field.name):
        return f"getattr(m, {field.name!r})"
    return f"m.{field.name}"


def _is_special(descriptor: Descriptor) -> bool:
    return (
        descriptor.full_name in json_format._WKTJSONMETHODS  # type: ignore[attr-defined]
        or descriptor.file.name == "google/protobuf/wrappers.proto"
    )


class _Compiler:
    """Generates, and caches, one converter function per message type for one key style."""

    def __init__(self, *, preserving_proto_field_name: bool) -> None:
        self._preserving = preserving_proto_field_name
        self._lock = threading.RLock()
        self._serial = itertools.count()
        self._converters: dict[Descriptor, _Convert] = {}
        self._converter_names: dict[Descriptor, str] = {}
        self._sources: dict[Descriptor, str] = {}
        self._enum_names: dict[str, str] = {}
        self._map_names: dict[tuple[int, str], str] = {}
        self._method_names: dict[Any, str] = {}
        self._namespace: dict[str, Any] = {
            "_b2a": _b2a,
            "_b64": _b64,
            "_bool_key": _bool_key,
            "_double": _double,
            "_double_map": _double_map,
            "_float": _float,
            "_string_map": _string_map,
            "_timestamp": _timestamp,
            "_slice_all": itemgetter(slice(None)),
            # Other well-known types: protobuf's printer, applied to the sub-message alone,
            # gives the same value it would give inside the enclosing message.
            "_protobuf": functools.partial(
                json_format.MessageToDict,
                always_print_fields_with_no_presence=True,
                preserving_proto_field_name=preserving_proto_field_name,
            ),
        }
        # protobuf's private printer is used at generation time only, to compute defaults and
        # enum names exactly as protobuf does (custom JSON enum names, NullValue): never per
        # message.
        self._printer = json_format._Printer(  # type: ignore[attr-defined]
            preserving_proto_field_name=preserving_proto_field_name,
            always_print_fields_with_no_presence=True,
        )

    def converter(self, descriptor: Descriptor) -> _Convert:
        convert = self._converters.get(descriptor)
        if convert is None:
            with self._lock:
                self._compile_reachable(descriptor)
                convert = self._converters[descriptor]
        return convert

    def source(self, descriptor: Descriptor) -> str:
        self.converter(descriptor)
        return self._sources.get(descriptor, "")

    def key(self, field: FieldDescriptor) -> str:
        if field.is_extension:
            return f"[{field.full_name}]"
        return field.name if self._preserving else field.json_name

    def table_entry(self, field: FieldDescriptor) -> tuple[str, _Convert | None]:
        """For the sparse shape: the key and the conversion of a value ListFields returned."""
        with self._lock:
            if field.message_type is not None:
                self._compile_reachable(field.message_type)
            return self.key(field), self._field_callable(field)

    def _compile_reachable(self, root: Descriptor) -> None:
        """Generates converters for ``root`` and every message type it can contain.

        Names are assigned to all of them before any source is generated, and generated code
        refers to other converters by global name, so recursive types need no special care.
        """
        new: list[Descriptor] = []
        try:
            self._name_reachable(root, new)
            for descriptor in new:
                name = self._converter_names[descriptor]
                source = self._generate(descriptor, name)
                code = compile(source, f"<trio_events._json {descriptor.full_name}>", "exec")
                exec(code, self._namespace)
                self._sources[descriptor] = source
        except BaseException:
            # Leave no half-compiled types behind; the next call starts over.
            for descriptor in new:
                self._converter_names.pop(descriptor, None)
            raise
        for descriptor, name in self._converter_names.items():
            if descriptor not in self._converters:
                self._converters[descriptor] = self._namespace[name]

    def _name_reachable(self, root: Descriptor, new: list[Descriptor]) -> None:
        pending = [root]
        while pending:
            descriptor = pending.pop()
            if descriptor in self._converter_names:
                continue
            if descriptor.full_name == _TIMESTAMP:
                self._converter_names[descriptor] = "_timestamp"
                continue
            if _is_special(descriptor):
                self._converter_names[descriptor] = "_protobuf"
                continue
            self._converter_names[descriptor] = f"_convert_{next(self._serial)}"
            new.append(descriptor)
            for field in descriptor.fields:
                if _is_map(field):
                    value_type = _message_type(field).fields_by_name["value"].message_type
                    if value_type is not None:
                        pending.append(value_type)
                elif field.message_type is not None:
                    pending.append(field.message_type)

    def _generate(self, descriptor: Descriptor, name: str) -> str:
        implicit = [f for f in descriptor.fields if not f.has_presence]
        if descriptor.extension_ranges:
            # Extensions are only discoverable through ListFields.
            return self._generate_sparse(descriptor, name, implicit)
        # A one-member oneof (such as the synthetic oneof of a proto3 optional field) is just
        # a field with presence; for larger ones a single WhichOneof beats a HasField each.
        oneofs = [o for o in descriptor.oneofs if len(o.fields) > 1]
        present = [
            f
            for f in descriptor.fields
            if f.has_presence
            and (f.containing_oneof is None or len(f.containing_oneof.fields) == 1)
        ]
        return self._generate_direct(descriptor, name, implicit, present, oneofs)

    def _generate_direct(
        self,
        descriptor: Descriptor,
        name: str,
        implicit: list[FieldDescriptor],
        present: list[FieldDescriptor],
        oneofs: list[Any],
    ) -> str:
        has_field = self._method(descriptor, "HasField")
        which_oneof = self._method(descriptor, "WhichOneof")
        lines = [f"def {name}(m):", "    js = {"]
        lines += [f"        {self.key(f)!r}: {self._field_expr(f, _read(f))}," for f in implicit]
        lines.append("    }")
        for field in present:
            lines += [
                f"    if {has_field}(m, {field.name!r}):",
                f"        js[{self.key(field)!r}] = {self._value_expr(field, _read(field))}",
            ]
        for oneof in oneofs:
            lines.append(f"    which = {which_oneof}(m, {oneof.name!r})")
            for i, field in enumerate(oneof.fields):
                lines += [
                    f"    {'if' if i == 0 else 'elif'} which == {field.name!r}:",
                    f"        js[{self.key(field)!r}] = {self._value_expr(field, _read(field))}",
                ]
        lines.append("    return js")
        return "\n".join(lines) + "\n"

    def _generate_sparse(
        self, descriptor: Descriptor, name: str, implicit: list[FieldDescriptor]
    ) -> str:
        """Defaults of the implicit-presence fields, then converts what ListFields yields."""
        table = f"_fields_{next(self._serial)}"
        self._namespace[table] = _FieldTable(self)
        defaults = [f"{self.key(f)!r}: {self._default_source(f)}" for f in implicit]
        # A dict display rather than a copied template: list and dict defaults must be fresh
        # objects in every result.
        return (
            f"def {name}(m):\n"
            f"    js = {{{', '.join(defaults)}}}\n"
            f"    for field, value in {self._method(descriptor, 'ListFields')}(m):\n"
            f"        key, convert = {table}[field]\n"
            f"        js[key] = value if convert is None else convert(value)\n"
            f"    return js\n"
        )

    def _default_source(self, field: FieldDescriptor) -> str:
        if _is_map(field):
            return "{}"
        if field.is_repeated:
            return "[]"
        value = self._printer._FieldToJsonObject(field, field.default_value)
        if type(value) in (str, int, bool) or (type(value) is float and value - value == 0.0):
            return repr(value)
        return self._register(value, "default")

    def _method(self, descriptor: Descriptor, method: str) -> str:
        """A global name for ``Class.method``: calling it unbound skips creating a bound method,
        which on upb costs as much as the call itself."""
        function = getattr(message_factory.GetMessageClass(descriptor), method)
        name = self._method_names.get(function)
        if name is None:
            name = self._method_names[function] = self._register(function, method)
        return name

    def _register(self, value: Any, hint: str) -> str:
        name = f"_{hint}_{next(self._serial)}"
        self._namespace[name] = value
        return name

    # An expression for a whole field read as ``src`` (direct shape; src may be unset/empty).
    def _field_expr(self, field: FieldDescriptor, src: str) -> str:
        if _is_map(field):
            return f"({self._map_function(field)}(v) if (v := {src}) else {{}})"
        if field.is_repeated:
            element = self._value_function(field)
            # Slicing builds the element list in C, much faster than iterating a upb container.
            if element is None:
                return f"(v[:] if (v := {src}) else [])"
            return f"([{element}(x) for x in v[:]] if (v := {src}) else [])"
        if field.type == FieldDescriptor.TYPE_BYTES:
            # Implicit-presence bytes are often empty (unset ids); skip the encoder for them.
            return f"(_b2a(v, newline=False).decode() if (v := {src}) else '')"
        return self._value_expr(field, src)

    # An expression for one singular value read as ``src``.
    def _value_expr(self, field: FieldDescriptor, src: str) -> str:
        if field.cpp_type == FieldDescriptor.CPPTYPE_ENUM:
            return f"{self._enum_table(field)}[{src}]"
        if field.type == FieldDescriptor.TYPE_BYTES:
            return f"_b2a({src}, newline=False).decode()"
        function = self._value_function(field)
        return src if function is None else f"{function}({src})"

    # The name of a callable converting one singular value; None when the value is its JSON.
    def _value_function(self, field: FieldDescriptor) -> str | None:
        cpp_type = field.cpp_type
        if cpp_type == FieldDescriptor.CPPTYPE_MESSAGE:
            return self._converter_names[_message_type(field)]
        if cpp_type == FieldDescriptor.CPPTYPE_ENUM:
            return f"{self._enum_table(field)}.__getitem__"
        if cpp_type == FieldDescriptor.CPPTYPE_STRING:
            return "_b64" if field.type == FieldDescriptor.TYPE_BYTES else None
        if cpp_type in (FieldDescriptor.CPPTYPE_INT64, FieldDescriptor.CPPTYPE_UINT64):
            return "str"
        if cpp_type == FieldDescriptor.CPPTYPE_DOUBLE:
            return "_double"
        if cpp_type == FieldDescriptor.CPPTYPE_FLOAT:
            return "_float"
        # bool, int32 and uint32 (and their zigzag and fixed-width variants) print as they are.
        return None

    # For the sparse shape: a callable for a set (non-empty) field value, None for identity.
    def _field_callable(self, field: FieldDescriptor) -> _Convert | None:
        if _is_map(field):
            source = self._map_function(field)
        elif field.is_repeated:
            element = self._value_function(field)
            source = "_slice_all" if element is None else f"lambda v: [{element}(x) for x in v[:]]"
        else:
            function = self._value_function(field)
            if function is None:
                return None
            source = function
        convert: _Convert = eval(source, self._namespace)
        return convert

    def _enum_table(self, field: FieldDescriptor) -> str:
        enum_type = field.enum_type
        assert enum_type is not None
        name = self._enum_names.get(enum_type.full_name)
        if name is None:
            names: dict[int, Any] = _ClosedEnumNames() if enum_type.is_closed else _OpenEnumNames()
            for value in enum_type.values:
                names[value.number] = self._printer._FieldToJsonObject(field, value.number)
            name = self._enum_names[enum_type.full_name] = self._register(names, "enum")
        return name

    def _map_function(self, field: FieldDescriptor) -> str:
        entry = _message_type(field)
        key_field = entry.fields_by_name["key"]
        value_field = entry.fields_by_name["value"]
        value_function = self._value_function(value_field)
        if key_field.type == FieldDescriptor.TYPE_STRING:
            if value_function is None:
                return "_string_map"
            if value_function == "_double":
                return "_double_map"
        cache_key = (key_field.type, value_function or "")
        name = self._map_names.get(cache_key)
        if name is None:
            # Map keys are JSON strings whatever their type; bools print as true/false.
            if key_field.type == FieldDescriptor.TYPE_STRING:
                key = "k"
            elif key_field.type == FieldDescriptor.TYPE_BOOL:
                key = "_bool_key(k)"
            else:
                key = "str(k)"
            value = "m[k]" if value_function is None else f"{value_function}(m[k])"
            name = self._map_names[cache_key] = self._register(
                eval(f"lambda m: {{{key}: {value} for k in m}}", self._namespace), "map"
            )
        return name


class _FieldTable(dict[FieldDescriptor, tuple[str, "_Convert | None"]]):
    """A sparse-shape converter's field table, filled on first sight of each field.

    Lazily, because that also covers extensions, which are not known when the type is compiled.
    """

    def __init__(self, compiler: _Compiler) -> None:
        super().__init__()
        self._compiler = compiler

    def __missing__(self, field: FieldDescriptor) -> tuple[str, _Convert | None]:
        entry = self[field] = self._compiler.table_entry(field)
        return entry


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


@final
class ProtobufReferenceConverter:
    """Ray's own conversion behind :class:`JsonConverter`'s interface (benchmarks only).

    Each event goes through ``json.loads(MessageToJson(...))`` and the list through
    ``json.dumps``, exactly as :func:`protobuf_reference_dumps`: the same JSON value as
    :class:`JsonConverter`, about ten times the CPU. A publisher uses it with
    ``PublisherConfig(converter="protobuf")`` (``trio-events agent --json-converter protobuf``),
    so a benchmark can run a reference pipeline that differs only in its converter.
    """

    def __init__(self, *, preserving_proto_field_name: bool = False) -> None:
        self._preserving_proto_field_name = preserving_proto_field_name

    @property
    def preserving_proto_field_name(self) -> bool:
        return self._preserving_proto_field_name

    def to_value(self, message: Message) -> Any:
        return json.loads(
            json_format.MessageToJson(
                message,
                always_print_fields_with_no_presence=True,
                preserving_proto_field_name=self._preserving_proto_field_name,
            )
        )

    async def dumps_serialized_cooperatively(
        self, blobs: Iterable[bytes], *, chunk_size: int = DEFAULT_CHUNK_SIZE
    ) -> bytes:
        """Like :meth:`JsonConverter.dumps_serialized_cooperatively`, with protobuf's printer."""
        parse = pb.RayEvent.FromString
        converted: list[Any] = []
        for chunk in chunked(blobs, chunk_size):
            converted += [self.to_value(parse(blob)) for blob in chunk]
            await trio.lowlevel.checkpoint()
        return json.dumps(converted).encode("utf-8")


def protobuf_reference_dumps(
    messages: Iterable[Message], *, preserving_proto_field_name: bool = False
) -> bytes:
    """The POST body exactly as Ray's ``AsyncHttpPublisherClient`` builds it (slow reference).

    Per event ``json.loads(MessageToJson(...))`` with Ray's flags, then the ``json.dumps`` that
    aiohttp's ``json=`` applies to the list, encoded as UTF-8.
    """
    events = [
        json.loads(
            json_format.MessageToJson(
                message,
                always_print_fields_with_no_presence=True,
                preserving_proto_field_name=preserving_proto_field_name,
            )
        )
        for message in messages
    ]
    return json.dumps(events).encode("utf-8")
