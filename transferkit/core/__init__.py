"""Core: errors, config trees (settings, sections, flat keys), atomic file writes, the
input spec, the task registry and the run directory; the lowest layer, importing no
other part of transferkit."""
