"""The outside world behind small interfaces: Feast, Kafka and the local event log, the
worker's state stores, MLflow, Prometheus, dead letters."""
