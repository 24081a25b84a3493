#!/usr/bin/env bash
# The CUDA backend's hardware check, prepared as one run on a machine with an NVIDIA GPU and
# no network (this project's device machines: Python 3.12 with PyTorch, CuPy, numba and
# numba-cuda already installed). It installs numrnn without fetching anything, runs the CUDA
# tests on the GPU (every launcher against the CPU kernel, every task's training steps, every
# command on --device cuda against --device cpu, PTX), trains and samples from the CLI on the
# GPU, and runs the speed benchmark against PyTorch on the same GPU. Everything it prints also
# goes to $OUT/gpu_check.log (./gpu_check.log without $OUT), the benchmark's raw results to
# speed_cuda.json beside it.
#
# Packages the machine lacks travel as wheels in .whl/ (ignored by git): here, once,
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl plotext==6.1.0
# then (the device tool) run `bash benchmarks/gpu_check.sh` carrying .whl, timeout 540 s.
# It takes about 8 minutes; each stage has its own time limit so a stuck one cannot take the
# others' time.
set -u -o pipefail
out=${OUT:-.}
exec > >(tee "$out/gpu_check.log") 2>&1

stage() { printf '\n=== %s (%s)\n' "$1" "$(date -u +%H:%M:%S)"; }

stage "machine"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || exit 1
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps .whl/*.whl || exit 1
fi
python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . || exit 1
python3 - <<'PY'
from importlib.metadata import version

for name in ("numrnn", "numpy", "numba", "numba-cuda", "cupy-cuda13x", "torch"):
    try:
        print(f"{name} {version(name)}")
    except Exception as error:  # a missing one is worth a line, not a stop
        print(f"{name}: {error!r}")
from numrnn.kernels import resolve_device

print("--device auto resolves to", resolve_device("auto"))
PY

stage "CUDA tests on the GPU"
NUMRNN_TEST_GPU=1 timeout 300 python3 -m pytest -q -p no:cacheprovider tests/test_cuda_sim.py tests/test_cuda_ptx.py

stage "train and sample on the GPU"
timeout 120 numrnn train data/shakespeare.txt --device cuda --max-time 60s --log-every 50 \
    -o /tmp/gpu_check.safetensors --force
timeout 60 numrnn sample -c /tmp/gpu_check.safetensors --device cuda --prime "ROMEO:" --length 300 --seed 1
timeout 60 numrnn eval -c /tmp/gpu_check.safetensors --device cuda data/shakespeare.txt

stage "speed against PyTorch on the GPU"
timeout 240 python3 benchmarks/speed.py --device cuda --configs B,C,D --repeats 1 --json "$out/speed_cuda.json"
stage "done"
