"""The read-only FUSE filesystem: inode/handle core, the RootNodes seam, pyfuse3 operations.

It knows castore only, never Nix: the mount is handed a RootNodes provider and
the blob and directory services. Import its submodules directly; this package
imports nothing, so ``fs.root_nodes`` loads without pyfuse3.
"""
