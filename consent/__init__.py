"""Consent registry, compliance gate, action catalog and the hash-chained audit log.

Depends on nothing else of ours: the domain types here are plain pydantic models, and the
operational store is reached through SQLAlchemy only in ``store``, ``registry`` and ``audit``.
"""
