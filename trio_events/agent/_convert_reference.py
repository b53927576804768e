"""Ray's own JSON conversion behind :class:`JsonConverter`'s interface: the slow reference.

``--json-converter protobuf`` runs a pipeline that differs from the default only in its
converter (for benchmarks), and :func:`protobuf_reference_dumps` is the POST body exactly as
Ray's publisher builds it (the tests' oracle).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, final

import trio
from google.protobuf import json_format

from trio_events import pb

if TYPE_CHECKING:
    from collections.abc import Iterable

    from google.protobuf.message import Message
from trio_events.agent._convert import DEFAULT_CHUNK_SIZE, chunked


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
