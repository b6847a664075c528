"""NAR: the Nix archive format (writer, reader, ingestion into castore)."""
