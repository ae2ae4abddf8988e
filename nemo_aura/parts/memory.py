"""Process memory readings for the benchmarks (Linux)."""
from __future__ import annotations

import resource
from pathlib import Path


def _status_mib(field: str) -> float | None:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return None


def current_rss_mib() -> float:
    value = _status_mib("VmRSS")
    return float("nan") if value is None else value


def peak_rss_mib() -> float:
    """Peak resident memory since the process started or since the last ``reset_peak_rss()``."""
    value = _status_mib("VmHWM")
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 if value is None else value


def reset_peak_rss() -> bool:
    """Restart the peak (``VmHWM``) from the current RSS, so one phase of a run can be measured on its own.
    False where the kernel does not allow it (then peaks stay cumulative)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False
