"""The generated protobuf/gRPC modules: fresh, and wire-compatible with tvix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import Descriptor

import tvixmount._proto
from tvixmount._proto import (
    castore_pb2,
    pathinfo_pb2,
    rpc_blobstore_pb2,
    rpc_blobstore_pb2_grpc,
    rpc_directory_pb2,
    rpc_directory_pb2_grpc,
    rpc_pathinfo_pb2,
    rpc_pathinfo_pb2_grpc,
)

PROTO_DIR = Path(__file__).resolve().parent.parent / "protos"
GENERATED_DIR = Path(tvixmount._proto.__file__).parent


def test_generated_modules_are_not_stale(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools", reason="grpcio-tools (dev extra) is needed to regenerate")
    from tvixmount._protogen import generate

    generate(PROTO_DIR, tmp_path)
    fresh = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    committed = {
        p.name: p.read_bytes()
        for p in GENERATED_DIR.iterdir()
        if p.is_file() and p.suffix in (".py", ".pyi")
    }
    assert sorted(fresh) == sorted(committed), "run `make proto`"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert stale == [], f"stale generated modules {stale}: run `make proto`"


def test_packages_follow_tvix() -> None:
    assert castore_pb2.DESCRIPTOR.package == "tvix.castore.v1"
    assert rpc_blobstore_pb2.DESCRIPTOR.package == "tvix.castore.v1"
    assert rpc_directory_pb2.DESCRIPTOR.package == "tvix.castore.v1"
    assert pathinfo_pb2.DESCRIPTOR.package == "tvix.store.v1"
    assert rpc_pathinfo_pb2.DESCRIPTOR.package == "tvix.store.v1"


@pytest.mark.parametrize(
    "module",
    [castore_pb2, pathinfo_pb2, rpc_blobstore_pb2, rpc_directory_pb2, rpc_pathinfo_pb2],
    ids=lambda m: m.__name__.rpartition(".")[2],
)
def test_files_are_proto3(module: Any) -> None:
    proto = descriptor_pb2.FileDescriptorProto.FromString(module.DESCRIPTOR.serialized_pb)
    assert proto.syntax == "proto3"


def _fields(message: Descriptor) -> dict[str, int]:
    return {f.name: f.number for f in message.fields}


@pytest.mark.parametrize(
    ("message", "fields"),
    [
        (castore_pb2.Directory, {"directories": 1, "files": 2, "symlinks": 3}),
        (castore_pb2.DirectoryNode, {"name": 1, "digest": 2, "size": 3}),
        (castore_pb2.FileNode, {"name": 1, "digest": 2, "size": 3, "executable": 4}),
        (castore_pb2.SymlinkNode, {"name": 1, "target": 2}),
        (castore_pb2.Node, {"directory": 1, "file": 2, "symlink": 3}),
        (
            rpc_blobstore_pb2.StatBlobRequest,
            {"digest": 1, "send_chunks": 2, "send_bao": 3},
        ),
        (rpc_blobstore_pb2.StatBlobResponse, {"chunks": 2, "bao": 3}),
        (rpc_blobstore_pb2.StatBlobResponse.ChunkMeta, {"digest": 1, "size": 2}),
        (rpc_blobstore_pb2.ReadBlobRequest, {"digest": 1}),
        (rpc_blobstore_pb2.BlobChunk, {"data": 1}),
        (rpc_blobstore_pb2.PutBlobResponse, {"digest": 1}),
        (rpc_directory_pb2.GetDirectoryRequest, {"digest": 1, "recursive": 2}),
        (rpc_directory_pb2.PutDirectoryResponse, {"root_digest": 1}),
        (pathinfo_pb2.PathInfo, {"node": 1, "references": 2, "narinfo": 3}),
        (pathinfo_pb2.StorePath, {"name": 1, "digest": 2}),
        (
            pathinfo_pb2.NARInfo,
            {
                "nar_size": 1,
                "nar_sha256": 2,
                "signatures": 3,
                "reference_names": 4,
                "deriver": 5,
                "ca": 6,
            },
        ),
        (pathinfo_pb2.NARInfo.Signature, {"name": 1, "data": 2}),
        (pathinfo_pb2.NARInfo.CA, {"type": 1, "digest": 2}),
        (rpc_pathinfo_pb2.GetPathInfoRequest, {"by_output_hash": 1}),
        (rpc_pathinfo_pb2.CalculateNARResponse, {"nar_size": 1, "nar_sha256": 2}),
        (rpc_pathinfo_pb2.ListPathInfoRequest, {}),
    ],
    ids=lambda v: v.DESCRIPTOR.full_name if hasattr(v, "DESCRIPTOR") else None,
)
def test_field_numbers_match_protocol(message: Any, fields: dict[str, int]) -> None:
    assert _fields(message.DESCRIPTOR) == fields


def test_node_is_a_oneof() -> None:
    oneof = castore_pb2.Node.DESCRIPTOR.oneofs_by_name["node"]
    assert [f.name for f in oneof.fields] == ["directory", "file", "symlink"]


def test_request_oneofs_are_by_what() -> None:
    directory = rpc_directory_pb2.GetDirectoryRequest.DESCRIPTOR.oneofs_by_name["by_what"]
    pathinfo = rpc_pathinfo_pb2.GetPathInfoRequest.DESCRIPTOR.oneofs_by_name["by_what"]
    assert [f.name for f in directory.fields] == ["digest"]
    assert [f.name for f in pathinfo.fields] == ["by_output_hash"]


def test_ca_hash_enum_values() -> None:
    assert dict(pathinfo_pb2.NARInfo.CA.Hash.items()) == {
        "NAR_SHA256": 0,
        "NAR_SHA1": 1,
        "NAR_SHA512": 2,
        "NAR_MD5": 3,
        "TEXT_SHA256": 4,
        "FLAT_SHA1": 5,
        "FLAT_MD5": 6,
        "FLAT_SHA256": 7,
        "FLAT_SHA512": 8,
    }


def test_pathinfo_messages_refer_to_castore_node() -> None:
    node_type = pathinfo_pb2.PathInfo.DESCRIPTOR.fields_by_name["node"].message_type
    assert node_type is not None
    assert node_type.full_name == "tvix.castore.v1.Node"


# (path, client streams, server streams, request type, response type)
METHODS = [
    ("/tvix.castore.v1.BlobService/Stat", False, False, "StatBlobRequest", "StatBlobResponse"),
    ("/tvix.castore.v1.BlobService/Read", False, True, "ReadBlobRequest", "BlobChunk"),
    ("/tvix.castore.v1.BlobService/Put", True, False, "BlobChunk", "PutBlobResponse"),
    ("/tvix.castore.v1.DirectoryService/Get", False, True, "GetDirectoryRequest", "Directory"),
    ("/tvix.castore.v1.DirectoryService/Put", True, False, "Directory", "PutDirectoryResponse"),
    ("/tvix.store.v1.PathInfoService/Get", False, False, "GetPathInfoRequest", "PathInfo"),
    ("/tvix.store.v1.PathInfoService/Put", False, False, "PathInfo", "PathInfo"),
    (
        "/tvix.store.v1.PathInfoService/CalculateNAR",
        False,
        False,
        "Node",
        "CalculateNARResponse",
    ),
    ("/tvix.store.v1.PathInfoService/List", False, True, "ListPathInfoRequest", "PathInfo"),
]


def _method(path: str) -> Any:
    service, method = path.strip("/").split("/")
    modules = (rpc_blobstore_pb2, rpc_directory_pb2, rpc_pathinfo_pb2)
    for module in modules:
        for desc in module.DESCRIPTOR.services_by_name.values():
            if desc.full_name == service:
                return desc.methods_by_name[method]
    raise AssertionError(f"no service {service}")


@pytest.mark.parametrize(("path", "client", "server", "request_type", "response_type"), METHODS)
def test_method_descriptor(
    path: str, client: bool, server: bool, request_type: str, response_type: str
) -> None:
    method = _method(path)
    assert (method.client_streaming, method.server_streaming) == (client, server)
    assert method.input_type.name == request_type
    assert method.output_type.name == response_type


def test_service_has_exactly_the_protocol_methods() -> None:
    declared = {
        f"/{service.full_name}/{method.name}"
        for module in (rpc_blobstore_pb2, rpc_directory_pb2, rpc_pathinfo_pb2)
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    }
    assert declared == {m[0] for m in METHODS}


class _RecordingChannel:
    """Stands in for grpc.Channel: records the method paths a stub binds."""

    def __init__(self) -> None:
        self.paths: dict[str, str] = {}

    def _record(self, kind: str) -> Any:
        def bind(path: str, *args: object, **kwargs: object) -> None:
            self.paths[path] = kind

        return bind

    def __getattr__(self, kind: str) -> Any:
        return self._record(kind)


def test_stubs_call_the_tvix_method_paths() -> None:
    channel = _RecordingChannel()
    rpc_blobstore_pb2_grpc.BlobServiceStub(channel)
    rpc_directory_pb2_grpc.DirectoryServiceStub(channel)
    rpc_pathinfo_pb2_grpc.PathInfoServiceStub(channel)
    kinds = {(False, False): "unary_unary", (False, True): "unary_stream"}
    kinds[(True, False)] = "stream_unary"
    assert channel.paths == {m[0]: kinds[(m[1], m[2])] for m in METHODS}
