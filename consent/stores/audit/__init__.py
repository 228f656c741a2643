"""The audit log on the operational store; the chain's format and its verification are
``consent/rules/chain.py``.

- ``log``: ``AuditLog``, the log as its callers use it;
- ``group_commit``: appends from threads, written in shared transactions;
- ``async_writer``: appends from an event loop, written in shared transactions;
- ``append_function``: the PostgreSQL function (``append_function.sql``) a group is written by;
- ``writes``: the chain's lock, head, keys and rows in a transaction (also the callers' own);
- ``reads``: records, exports, the stored chain's verification, checkpoints;
- ``pending``: a record waiting to be written;
- ``failures``: the errors callers see, and what a writer makes of a database's error;
- ``stats``: what the writers have committed.
"""
