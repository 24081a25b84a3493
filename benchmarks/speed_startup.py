"""What numrnn costs before its first character: the cold compile of each row's kernels (a
child of its own, into the run's kernel cache; on the GPU numba-cuda's JIT compilation, which
each process does again) and the wall time of ``numrnn --help`` and of ``numrnn sample`` on a
small checkpoint, cold and warm, beside numba's own floor (the CPU only).
"""

import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from harness import REPO_ROOT, median, run_in_own_process_or_error
from speed_setup import (
    ARBITRARY_CHARS,
    GRAD_CLIP,
    LR,
    STARTUP_SAMPLE_LENGTH,
    Job,
    Row,
    build_numrnn_model,
    child_env,
    load_numrnn_backend,
    say,
)


def child_compile(job):
    """Seconds of the first train step and first sample of a tiny model per row, in row order:
    numba compiles (or loads from the kernel cache) what that row needs and earlier rows did
    not."""
    import numpy as np

    from numrnn.data import Vocab
    from numrnn.optim import Optimizer
    from numrnn.sampling import SampleConfig, Sampler

    load_numrnn_backend(job.device)
    rng = np.random.default_rng(job.seed)
    times = {}
    for row in job.rows:
        tiny = replace(row, hidden=8, batch=2, seq_len=3, embed=8 if row.embed else 0)
        model = build_numrnn_model(tiny, job.seed, job.device)
        optimizer = Optimizer("adam", model.layout.size, model.dtype, model.kernels)
        tokens = rng.integers(0, row.vocab, size=(tiny.seq_len, tiny.batch))
        started = time.perf_counter()
        result = model.loss_and_grad(tokens, tokens, model.zero_state(tiny.batch), train=True, rng=rng)
        model.kernels.clip_global_norm(model.grads, GRAD_CLIP)
        optimizer.update(model.params, model.grads, LR)
        assert math.isfinite(result.loss)
        train_s = time.perf_counter() - started
        started = time.perf_counter()
        sampler = Sampler(model, Vocab(ARBITRARY_CHARS))
        "".join(sampler.generate(tokens[:, 0], SampleConfig(length=10), rng))
        times[row.name] = dict(train_s=train_s, sample_s=time.perf_counter() - started)
    return times


def child_make_checkpoint(job):
    """Write a small random-weight checkpoint (the 2 x 128 LSTM of config B) to job.path."""
    from numrnn.checkpoint import save_checkpoint
    from numrnn.data import Vocab

    model = build_numrnn_model(job.row, job.seed)
    save_checkpoint(job.path, model, Vocab(ARBITRARY_CHARS))
    return dict(path=job.path, bytes=Path(job.path).stat().st_size)


def measure_compile(settings):
    """child_compile in a child of its own, with the run's kernel cache."""
    job = Job(rows=tuple(settings.rows), seed=settings.seed, device=settings.device)
    where = f"kernel cache {settings.kernel_cache}" if job.device == "cpu" else "CUDA kernels, no disk cache"
    say(f"compiling numrnn's kernels for {len(job.rows)} row(s) ({where})")
    result, wall = run_in_own_process_or_error(
        child_compile, job, env=child_env("numrnn", "train", settings.kernel_cache)
    )
    if "error" not in result:
        total = sum(t["train_s"] + t["sample_s"] for t in result.values())
        say(f"  compiled in {total:.1f} s ({wall:.1f} s with the process start)")
    return result


def time_command(args, env, cwd):
    """Wall seconds of one command; its failure raised with the end of its stderr."""
    started = time.perf_counter()
    done = subprocess.run(
        args, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=600
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(args[2:])} exited with {done.returncode}: {done.stderr.strip()[-300:]}"
        )
    return wall


def time_cold_and_warm(args, env, cwd, warm_runs):
    """The first run with a fresh NUMRNN_CACHE_DIR, then ``warm_runs`` more with the same."""
    cold = time_command(args, env, cwd)
    warm = [time_command(args, env, cwd) for _ in range(warm_runs)]
    return dict(cold_s=cold, warm_s=median(warm), warm_runs_s=warm)


# numba's own floor, in processes with none of numrnn's kernels, CLI or checkpoint in them:
# importing numba and running one function from numba's cache (the first run compiles it),
# alone and with a product through scipy's BLAS (numba's np.dot imports
# scipy.linalg.cython_blas; the script loads it as numrnn's kernels do, through
# numrnn.threads.import_before_package, which imports nothing beyond the standard library).
# A start-up target below these is beyond numba on the machine.
FLOOR_SCRIPTS = {
    "floor": "import numba\n\n@numba.njit(cache=True)\ndef one(x):\n    return x + 1\n\none(1)\n",
    "floor-blas": (
        "from numrnn.threads import import_before_package\n\n"
        'import_before_package("scipy.linalg", "cython_blas")\n'
        "import numba\nimport numpy as np\n\n@numba.njit(cache=True)\ndef one(a):\n"
        "    return np.dot(a, a)\n\none(np.ones((2, 2)))\n"
    ),
}


def floor_commands(tmp):
    """The commands of numba's floor: FLOOR_SCRIPTS written under ``tmp``, by name."""
    commands = {}
    for name, source in FLOOR_SCRIPTS.items():
        script = Path(tmp) / f"{name.replace('-', '_')}.py"
        script.write_text(source)
        commands[name] = [sys.executable, str(script)]
    return commands


def measure_startup(settings, tmp):
    """Cold and warm wall time of ``numrnn --help`` and of ``numrnn sample`` on a 2 x 128 LSTM
    checkpoint made here, each command with a kernel cache of its own under ``tmp``, and of
    numba's floor (FLOOR_SCRIPTS), each script with a numba cache of its own."""
    checkpoint = Path(tmp) / "small.safetensors"
    made, _ = run_in_own_process_or_error(
        child_make_checkpoint,
        Job(row=Row.of("B", "lstm"), seed=settings.seed, path=str(checkpoint)),
        env=child_env("numrnn", "sample", settings.kernel_cache),
    )
    if "error" in made:
        return dict(error=made["error"])
    commands = {
        "help": [sys.executable, "-m", "numrnn_cli", "--help"],
        "sample": [
            sys.executable,
            "-m",
            "numrnn_cli",
            "sample",
            "-c",
            str(checkpoint),
            "--length",
            str(STARTUP_SAMPLE_LENGTH),
            "--seed",
            "1",
        ],
    }
    commands.update(floor_commands(tmp))
    results = dict(checkpoint_bytes=made["bytes"])
    for name, args in commands.items():
        cache = tempfile.mkdtemp(prefix=f"cache-{name}-", dir=tmp)
        env = dict(os.environ, NUMRNN_CACHE_DIR=cache, NUMBA_CACHE_DIR=cache)
        try:
            results[name] = time_cold_and_warm(args, env, str(REPO_ROOT), settings.startup_runs)
        except (RuntimeError, subprocess.TimeoutExpired, OSError) as exc:
            results[name] = dict(error=str(exc))
        say(f"start-up {name}: {results[name]}")
    return results
