"""The one exception type for expected failures: bad input, missing files."""


class PipelineError(Exception):
    """An expected failure; the CLI prints its message as one line, no traceback."""
