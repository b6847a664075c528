"""NAR, the Nix archive format: writer, strict streaming reader, castore ingestion."""

from .ingest import ingest_nar
from .reader import NarVisitor, read_nar
from .writer import calculate_nar, write_nar

__all__ = ["NarVisitor", "calculate_nar", "ingest_nar", "read_nar", "write_nar"]
