"""Third-party generated code kept unchanged (see each file's header for its source,
version and licence)."""
