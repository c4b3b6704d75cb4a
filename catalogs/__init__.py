"""The persona catalogs persona-sync ships (YAML)."""
