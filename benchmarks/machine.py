"""What the benchmarks say about the machine and software they ran on (shared by every
benchmark script)."""

import importlib.metadata
import os
import platform
from pathlib import Path

BUSY_LOAD = 0.5  # 1-minute load average at the start above which the speed columns get a warning


# AMD's core generations by CPU family (Zen 3 and Zen 4 share family 25; Zen 4 has AVX-512).
_AMD_CORES = {23: "Zen/Zen 2", 25: "Zen 3", 26: "Zen 5"}


def cpu_name():
    """The CPU's model name, with its family, model, core generation (AMD) and widest vector
    instructions where /proc/cpuinfo says them: the same model name (a cloud's "AMD EPYC") can
    be CPUs whose products run at half or twice the speed, e.g. "AMD EPYC (family 25 model 17,
    Zen 4, AVX-512)"."""
    try:
        fields = {}
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if not key.strip():
                break  # the first CPU's block ends at a blank line
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        fields = {}
    name = fields.get("model name") or platform.processor() or platform.machine()
    if "cpu family" not in fields:
        return name
    family, model = int(fields["cpu family"]), int(fields.get("model", "0"))
    flags = set(fields.get("flags", "").split())
    vector = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else None
    core = _AMD_CORES.get(family) if fields.get("vendor_id") == "AuthenticAMD" else None
    if core == "Zen 3" and vector == "AVX-512":
        core = "Zen 4"
    details = [f"family {family} model {model}", core, vector]
    return f"{name} ({', '.join(d for d in details if d)})"


def openblas_kernels():
    """{library file: the kernel set ("core") it runs} for every OpenBLAS this process has
    loaded: numba's products run scipy's, whose kernels OPENBLAS_CORETYPE can force (some
    machines set it to "Haswell", the AVX2 kernels, at about half the float32 throughput of the
    AVX-512 "SkylakeX" kernels OpenBLAS picks on a CPU that has them)."""
    import ctypes

    from numrnn.threads import openblas_functions

    kernels = {}
    for path, (corename,) in openblas_functions("get_corename"):
        corename.restype = ctypes.c_char_p
        kernels[Path(path).name] = corename().decode()
    return kernels


def openblas_environment():
    """The OpenBLAS variables that choose its kernels or their blocking, as set here."""
    return {
        name: os.environ[name] for name in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if name in os.environ
    }


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
