"""The operational store's adapters: the tables, the consent registry, the customer directory,
contact history, the erasure register, the gate's reads and the audit log."""
