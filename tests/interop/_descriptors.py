"""A comparable description of the wire schema, for ours and for the installed Ray's.

Only protobuf's descriptor API is used here (no trio_events, no ray), so the same code runs in
the test process on our generated modules and, through ``ray_descriptors.py``, in a subprocess
on Ray's own ``ray.core.generated`` modules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable

    from google.protobuf.descriptor import Descriptor, EnumDescriptor, ServiceDescriptor

# What goes over the wire between a Ray component and an aggregator: (service, methods).
WIRE_METHODS = {
    "ray.rpc.events.EventAggregatorService": ("AddEvents",),
    "ray.rpc.ReporterService": ("HealthCheck",),
}


def _enum(enum: EnumDescriptor) -> dict[str, Any]:
    return {
        "file": enum.file.name,
        "values": {value.name: value.number for value in enum.values},
    }


def describe(services: Iterable[ServiceDescriptor]) -> dict[str, Any]:
    """Methods, then every message and enum reachable from their requests and replies."""
    methods: dict[str, list[str]] = {}
    messages: dict[str, Any] = {}
    enums: dict[str, Any] = {}
    pending: list[Descriptor] = []
    for service in services:
        for name in WIRE_METHODS[service.full_name]:
            method = service.methods_by_name[name]
            path = f"/{service.full_name}/{method.name}"
            methods[path] = [method.input_type.full_name, method.output_type.full_name]
            pending += [method.input_type, method.output_type]
    while pending:
        message = pending.pop()
        if message.full_name in messages:
            continue
        fields = {}
        for field in message.fields:
            fields[field.name] = {
                "number": field.number,
                "type": field.type,
                "repeated": field.is_repeated,
                "has_presence": field.has_presence,
                "oneof": field.containing_oneof.name if field.containing_oneof else None,
                "json_name": field.json_name,
                "type_name": (
                    field.message_type.full_name
                    if field.message_type is not None
                    else field.enum_type.full_name
                    if field.enum_type is not None
                    else None
                ),
            }
            if field.message_type is not None:
                pending.append(field.message_type)
            if field.enum_type is not None:
                enums[field.enum_type.full_name] = _enum(field.enum_type)
        messages[message.full_name] = {"file": message.file.name, "fields": fields}
    return {"methods": methods, "messages": messages, "enums": enums}
