"""Training of the codec and the enhancer: one set of conventions (checkpoints, resume, logs, threads)."""
