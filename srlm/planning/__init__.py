"""Planning a run before it starts: the model's shape from its config alone (architecture) and the memory and time
plan of every job against the cluster budget (resources)."""
