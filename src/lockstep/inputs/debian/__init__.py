"""The Debian packages of the base: lock model, version order, mirror, resolver, fetch."""
