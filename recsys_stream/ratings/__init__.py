"""Explicit ratings: MF, PMF and the embedding net, their inputs, stream, task and report."""
