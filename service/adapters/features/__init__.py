"""The Feast adapters: feature rows written online and offline, a customer's online features
read (Redis, SQLite, or through the Feast SDK), Feast's online layout, the read's bounds."""
