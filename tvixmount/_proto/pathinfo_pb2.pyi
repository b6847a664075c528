from . import castore_pb2 as _castore_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PathInfo(_message.Message):
    __slots__ = ("node", "references", "narinfo")
    NODE_FIELD_NUMBER: _ClassVar[int]
    REFERENCES_FIELD_NUMBER: _ClassVar[int]
    NARINFO_FIELD_NUMBER: _ClassVar[int]
    node: _castore_pb2.Node
    references: _containers.RepeatedScalarFieldContainer[bytes]
    narinfo: NARInfo
    def __init__(self, node: _Optional[_Union[_castore_pb2.Node, _Mapping]] = ..., references: _Optional[_Iterable[bytes]] = ..., narinfo: _Optional[_Union[NARInfo, _Mapping]] = ...) -> None: ...

class StorePath(_message.Message):
    __slots__ = ("name", "digest")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    name: str
    digest: bytes
    def __init__(self, name: _Optional[str] = ..., digest: _Optional[bytes] = ...) -> None: ...

class NARInfo(_message.Message):
    __slots__ = ("nar_size", "nar_sha256", "signatures", "reference_names", "deriver", "ca")
    class Signature(_message.Message):
        __slots__ = ("name", "data")
        NAME_FIELD_NUMBER: _ClassVar[int]
        DATA_FIELD_NUMBER: _ClassVar[int]
        name: str
        data: bytes
        def __init__(self, name: _Optional[str] = ..., data: _Optional[bytes] = ...) -> None: ...
    class CA(_message.Message):
        __slots__ = ("type", "digest")
        class Hash(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
            __slots__ = ()
            NAR_SHA256: _ClassVar[NARInfo.CA.Hash]
            NAR_SHA1: _ClassVar[NARInfo.CA.Hash]
            NAR_SHA512: _ClassVar[NARInfo.CA.Hash]
            NAR_MD5: _ClassVar[NARInfo.CA.Hash]
            TEXT_SHA256: _ClassVar[NARInfo.CA.Hash]
            FLAT_SHA1: _ClassVar[NARInfo.CA.Hash]
            FLAT_MD5: _ClassVar[NARInfo.CA.Hash]
            FLAT_SHA256: _ClassVar[NARInfo.CA.Hash]
            FLAT_SHA512: _ClassVar[NARInfo.CA.Hash]
        NAR_SHA256: NARInfo.CA.Hash
        NAR_SHA1: NARInfo.CA.Hash
        NAR_SHA512: NARInfo.CA.Hash
        NAR_MD5: NARInfo.CA.Hash
        TEXT_SHA256: NARInfo.CA.Hash
        FLAT_SHA1: NARInfo.CA.Hash
        FLAT_MD5: NARInfo.CA.Hash
        FLAT_SHA256: NARInfo.CA.Hash
        FLAT_SHA512: NARInfo.CA.Hash
        TYPE_FIELD_NUMBER: _ClassVar[int]
        DIGEST_FIELD_NUMBER: _ClassVar[int]
        type: NARInfo.CA.Hash
        digest: bytes
        def __init__(self, type: _Optional[_Union[NARInfo.CA.Hash, str]] = ..., digest: _Optional[bytes] = ...) -> None: ...
    NAR_SIZE_FIELD_NUMBER: _ClassVar[int]
    NAR_SHA256_FIELD_NUMBER: _ClassVar[int]
    SIGNATURES_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_NAMES_FIELD_NUMBER: _ClassVar[int]
    DERIVER_FIELD_NUMBER: _ClassVar[int]
    CA_FIELD_NUMBER: _ClassVar[int]
    nar_size: int
    nar_sha256: bytes
    signatures: _containers.RepeatedCompositeFieldContainer[NARInfo.Signature]
    reference_names: _containers.RepeatedScalarFieldContainer[str]
    deriver: StorePath
    ca: NARInfo.CA
    def __init__(self, nar_size: _Optional[int] = ..., nar_sha256: _Optional[bytes] = ..., signatures: _Optional[_Iterable[_Union[NARInfo.Signature, _Mapping]]] = ..., reference_names: _Optional[_Iterable[str]] = ..., deriver: _Optional[_Union[StorePath, _Mapping]] = ..., ca: _Optional[_Union[NARInfo.CA, _Mapping]] = ...) -> None: ...
