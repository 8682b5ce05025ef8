"""What every kind of task shares: the training loop, steps and optimizer, runs and
checkpoints, config, threads, schedules and the data-parallel exchange."""
