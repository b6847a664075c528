"""Regenerate tvixmount._proto from protos/ (``make proto``).

protoc emits absolute imports (``import castore_pb2``); the generated modules
live inside the package, so they are rewritten to relative imports.
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

_ABSOLUTE_IMPORT = re.compile(r"^import (\w+_pb2) as ", re.MULTILINE)


def generate(proto_dir: Path, out_dir: Path) -> None:
    from grpc_tools import protoc  # dev-only dependency

    protos = sorted(str(p.name) for p in proto_dir.glob("*.proto"))
    include = Path(protoc.__file__).parent / "_proto"
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "protoc",
            f"-I{proto_dir}",
            f"-I{include}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            *protos,
        ]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        for old in out_dir.glob("*_pb2*.py*"):
            old.unlink()
        for generated in sorted(Path(tmp).iterdir()):
            text = _ABSOLUTE_IMPORT.sub(r"from . import \1 as ", generated.read_text())
            (out_dir / generated.name).write_text(text)
    init = out_dir / "__init__.py"
    init.write_text('"""Generated protobuf/gRPC modules (make proto); do not edit."""\n')


if __name__ == "__main__":
    generate(Path(sys.argv[1]), Path(sys.argv[2]))
