"""The `tlr` command's package: dev and operator tooling, above the services (none imports it)."""
