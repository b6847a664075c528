"""Test support shipped with tvixmount (the pytest plugin and fixture stores)."""
