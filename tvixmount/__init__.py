"""tvixmount: mount a Nix store read-only over FUSE."""
