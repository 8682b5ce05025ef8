"""Product pairs: the MF variants and skip-gram, their inputs, streams, evaluation and report."""
