"""The generated descriptors match Ray 2.60 field for field, and the generated code is fresh."""

from __future__ import annotations

import csv
import filecmp
import pathlib
import subprocess
import sys

import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from trio_events import pb

ROOT = pathlib.Path(__file__).resolve().parent.parent
TABLE = ROOT / "tests" / "data" / "ray_2_60_schema.tsv"

_TYPE_NAMES = {
    FieldDescriptor.TYPE_BYTES: "bytes",
    FieldDescriptor.TYPE_STRING: "string",
    FieldDescriptor.TYPE_INT32: "int32",
    FieldDescriptor.TYPE_INT64: "int64",
    FieldDescriptor.TYPE_UINT32: "uint32",
    FieldDescriptor.TYPE_UINT64: "uint64",
    FieldDescriptor.TYPE_BOOL: "bool",
    FieldDescriptor.TYPE_DOUBLE: "double",
}


def _rows(kind: str) -> list[dict[str, str]]:
    with TABLE.open() as fh:
        return [r for r in csv.DictReader(fh, delimiter="\t") if r["kind"] == kind]


def _field_type(fd: FieldDescriptor) -> str:
    if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
        key = _field_type(fd.message_type.fields_by_name["key"])
        value = _field_type(fd.message_type.fields_by_name["value"])
        return f"map<{key}, {value}>"
    if fd.message_type is not None:
        return str(fd.message_type.full_name)
    if fd.enum_type is not None:
        return str(fd.enum_type.full_name)
    return _TYPE_NAMES[fd.type]


def _field_label(fd: FieldDescriptor) -> str:
    if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
        return "map"
    if fd.is_repeated:
        return "repeated"
    oneof = fd.containing_oneof
    if oneof is not None:
        return (
            "optional" if fd.has_presence and oneof.name == f"_{fd.name}" else f"oneof {oneof.name}"
        )
    return ""


def _pool_message(name: str) -> Descriptor:
    return pb.DESCRIPTOR_POOL.FindMessageTypeByName(name)


def test_table_covers_every_event_type() -> None:
    messages = {r["scope"] for r in _rows("field")}
    assert len(pb.EVENT_TYPE_NAMES) == 18  # 17 event types + EVENT_TYPE_UNSPECIFIED
    for field in pb.RayEvent.DESCRIPTOR.fields:
        if field.message_type is not None and field.name != "timestamp":
            assert field.message_type.full_name in messages


@pytest.mark.parametrize("message", sorted({r["scope"] for r in _rows("field")}))
def test_message_fields_match_ray(message: str) -> None:
    expected = {
        (r["name"], int(r["number"]), r["type"], r["label"])
        for r in _rows("field")
        if r["scope"] == message
    }
    desc = _pool_message(message)
    actual = {(f.name, f.number, _field_type(f), _field_label(f)) for f in desc.fields}
    assert actual == expected


@pytest.mark.parametrize("enum", sorted({r["scope"] for r in _rows("enum_value")}))
def test_enum_values_match_ray(enum: str) -> None:
    expected = {(r["name"], int(r["number"])) for r in _rows("enum_value") if r["scope"] == enum}
    desc = pb.DESCRIPTOR_POOL.FindEnumTypeByName(enum)
    assert {(v.name, v.number) for v in desc.values} == expected


def test_reserved_numbers_and_names_match_ray() -> None:
    rows = _rows("reserved")
    assert {(r["scope"], r["name"], int(r["number"])) for r in rows} == {
        ("ray.rpc.events.TaskDefinitionEvent", "runtime_env_info", 8),
        ("ray.rpc.events.ActorTaskDefinitionEvent", "runtime_env_info", 7),
    }
    for r in rows:
        proto = _pool_message(r["scope"])
        from google.protobuf import descriptor_pb2

        fdp = descriptor_pb2.DescriptorProto()
        proto.CopyToProto(fdp)
        assert list(fdp.reserved_name) == [r["name"]]
        assert [(rr.start, rr.end) for rr in fdp.reserved_range] == [
            (int(r["number"]), int(r["number"]) + 1)
        ]


@pytest.mark.parametrize("row", _rows("method"), ids=lambda r: f"{r['scope']}/{r['name']}")
def test_service_methods_match_ray(row: dict[str, str]) -> None:
    service = pb.DESCRIPTOR_POOL.FindServiceByName(row["scope"])
    method = service.methods_by_name[row["name"]]
    assert method.input_type.full_name == row["type"]
    assert method.output_type.full_name == row["label"]


def test_ray_event_has_no_oneof() -> None:
    # Several payloads may be set at once on the wire (ray-reference.md 1.2).
    assert list(pb.RayEvent.DESCRIPTOR.oneofs) == []


def test_generated_code_is_fresh(tmp_path: pathlib.Path) -> None:
    """Regenerating from protos/ gives byte-identical code: run `nox -s protos` if this fails."""
    out = tmp_path / "_proto"
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "generate_protos.py"), str(out)],
        check=True,
        capture_output=True,
    )
    committed = ROOT / "trio_events" / "_proto"
    ours = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    theirs = sorted(
        p.relative_to(committed)
        for p in committed.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    )
    assert ours == theirs, "generated file set differs: run `nox -s protos`"
    stale = [str(p) for p in ours if not filecmp.cmp(out / p, committed / p, shallow=False)]
    assert stale == [], f"stale generated files (run `nox -s protos`): {stale}"
