"""Training: the run configuration, the training loop and session, checkpoints, run directories
(locking, resuming, verdicts) and the comparison of several rules."""
