"""Our schema lives in a private descriptor pool, so Ray's own modules can share the process."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from google.protobuf import descriptor_pb2, descriptor_pool

from trio_events import pb


def test_protobuf_default_pool_does_not_hold_our_schema() -> None:
    assert pb.DESCRIPTOR_POOL is not descriptor_pool.Default()
    assert pb.RayEvent.DESCRIPTOR.file.pool is pb.DESCRIPTOR_POOL
    assert pb.DESCRIPTOR_POOL.FindMessageTypeByName("ray.rpc.events.RayEvent")


def test_a_different_schema_under_ray_s_file_names_can_load_beside_ours() -> None:
    """What importing Ray's generated modules does: same file names, different content."""
    code = textwrap.dedent(
        """
        from google.protobuf import descriptor_pb2, descriptor_pool
        import trio_events.pb as pb
        other = descriptor_pb2.FileDescriptorProto(
            name="src/ray/protobuf/public/events_base_event.proto",
            package="ray.rpc.events",
            syntax="proto3",
        )
        other.message_type.add(name="RayEvent").field.add(
            name="only_field", number=1, type=9, label=1
        )
        descriptor_pool.Default().Add(other)
        event = pb.RayEvent(event_id=b"x")
        assert pb.RayEvent.FromString(event.SerializeToString()).event_id == b"x"
        print("ok")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_descriptor_protos_are_still_ray_s() -> None:
    proto = descriptor_pb2.FileDescriptorProto()
    pb.RayEvent.DESCRIPTOR.file.CopyToProto(proto)
    assert proto.name == "src/ray/protobuf/public/events_base_event.proto"
    assert proto.package == "ray.rpc.events"
