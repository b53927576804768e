"""The converter generator: one Python function per message type, from its descriptor.

See ``_convert.py`` for what the generated code does and why it is shaped this way; the value
conversions it calls are in ``_json_values.py``.
"""

from __future__ import annotations

import functools
import itertools
import keyword
import threading
from collections.abc import Callable
from operator import itemgetter
from typing import Any, Final

from google.protobuf import json_format, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from trio_events.agent._json_values import (
    _b2a,
    _b64,
    _bool_key,
    _ClosedEnumNames,
    _double,
    _double_map,
    _float,
    _OpenEnumNames,
    _string_map,
    _timestamp,
)

_Convert = Callable[[Any], Any]

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
                code = compile(source, f"<trio_events converter {descriptor.full_name}>", "exec")
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
