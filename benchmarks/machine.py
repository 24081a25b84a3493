"""What the benchmarks say about the machine and software they ran on (shared by every
benchmark script)."""

import importlib.metadata
import os
import platform
from pathlib import Path

BUSY_LOAD = 0.5  # 1-minute load average at the start above which the speed columns get a warning


def cpu_name():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average():
    """The 1-minute load average (None where unknown): other work skews the speed columns."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def package_version(name):
    """The installed version of a distribution, None when it is not installed."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def run_context(torch_version):
    """The fields every benchmark's JSON starts with: numrnn's and torch's versions, the CPU."""
    from numrnn import __version__

    return dict(numrnn_version=__version__, torch_version=torch_version, cpu=cpu_name(), cpus=os.cpu_count())
