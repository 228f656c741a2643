"""Hostile and careless inputs against the real services (issue 17): one module per promise,
each named in docs/threat-model.md."""
