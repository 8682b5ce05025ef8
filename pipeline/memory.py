"""Peak resident memory, as the stages report it."""

import resource
import sys


def peak_rss_mb(children: bool = False) -> float:
    """Peak RSS in MiB of this process, or of its largest finished child process.

    ru_maxrss is in KiB on Linux and in bytes on macOS.
    """
    who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
    peak = resource.getrusage(who).ru_maxrss
    scale = 1 if sys.platform == "darwin" else 1024
    return round(peak * scale / 2**20, 1)
