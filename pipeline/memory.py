"""Peak resident memory, as the stages report it."""

import resource
import sys


def peak_rss_mb() -> float:
    """Peak RSS of this process in MiB (ru_maxrss is in KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scale = 1 if sys.platform == "darwin" else 1024
    return round(peak * scale / 2**20, 1)
