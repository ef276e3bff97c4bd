"""Jobs: a config in, a tracked MLflow run out (train, offline, reward model, KL sweep)."""
