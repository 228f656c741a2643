"""Everything offline: the synthetic bank, training sets from Feast, need models and MLflow."""
