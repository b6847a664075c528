from . import castore_pb2 as _castore_pb2
from . import pathinfo_pb2 as _pathinfo_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class GetPathInfoRequest(_message.Message):
    __slots__ = ("by_output_hash",)
    BY_OUTPUT_HASH_FIELD_NUMBER: _ClassVar[int]
    by_output_hash: bytes
    def __init__(self, by_output_hash: _Optional[bytes] = ...) -> None: ...

class CalculateNARResponse(_message.Message):
    __slots__ = ("nar_size", "nar_sha256")
    NAR_SIZE_FIELD_NUMBER: _ClassVar[int]
    NAR_SHA256_FIELD_NUMBER: _ClassVar[int]
    nar_size: int
    nar_sha256: bytes
    def __init__(self, nar_size: _Optional[int] = ..., nar_sha256: _Optional[bytes] = ...) -> None: ...

class ListPathInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
