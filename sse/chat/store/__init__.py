"""Where conversations are kept: the `Store` interface, SQLite and PostgreSQL."""
