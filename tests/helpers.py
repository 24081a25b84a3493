"""Builders shared by the tests: kernels, models, trainers, the CLI."""

from pathlib import Path

import numpy as np

from numrnn.cells import GATES_PER_CELL


def cell_case(cell, rng, T=4, B=3, D=5, H=4, dtype=np.float64):
    """Random inputs and weights for one layer: x, h0, c0, Wx, Wh, bx, bh."""
    G = GATES_PER_CELL[cell] * H
    u = lambda *shape: rng.uniform(-0.8, 0.8, shape).astype(dtype)  # noqa: E731
    return dict(x=u(T, B, D), h0=u(B, H), c0=u(B, H), Wx=u(D, G), Wh=u(H, G), bx=u(G), bh=u(G))


def assert_clean_error(result, pattern, code=None):
    """A CliRunner result that failed with exactly one `error:` line (the last on stderr)
    matching ``pattern``, exit ``code`` (1 by default) and no traceback."""
    import re

    from numrnn_cli.exit_codes import ExitCode

    assert result.exit_code == (ExitCode.ERROR if code is None else code), result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and result.stderr.rstrip().splitlines()[-1] == errors[0], result.stderr
    assert re.search(pattern, errors[0]), result.stderr


_child_kernel_cache = None


def child_env():
    """The environment for a `numrnn` child process of the tests: this one's, with numrnn's
    kernel cache on: the test run's own where it has one (CI's, which this process fills as it
    compiles), else a folder made on the first call and removed at exit. The first child
    compiles what it runs (up to about a minute with the cache off), the next ones load it;
    either folder starts empty every test run, so nothing stale is ever read."""
    import atexit
    import os
    import shutil
    import tempfile

    from numrnn import tunables

    global _child_kernel_cache
    if tunables.cache_enabled() and os.environ.get("NUMRNN_CACHE_DIR"):
        return dict(os.environ)
    if _child_kernel_cache is None:
        _child_kernel_cache = tempfile.mkdtemp(prefix="numrnn-test-kernels-")
        atexit.register(shutil.rmtree, _child_kernel_cache, ignore_errors=True)
    return dict(os.environ, NUMRNN_CACHE="1", NUMRNN_CACHE_DIR=_child_kernel_cache)


def modules_loaded_by_cli(args):
    """Every module a fresh Python process has imported once ``numrnn ARGS`` has run (a
    command that exits, like ``--help``): what a command costs at start-up."""
    import subprocess
    import sys

    code = (
        "import sys\nfrom numrnn_cli import cli\n"
        f"try:\n    cli({list(args)!r}, prog_name='numrnn')\nexcept SystemExit:\n    pass\n"
        "print('MODULES', ' '.join(sorted(sys.modules)), file=sys.stderr)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(proc.stderr.rsplit("MODULES", 1)[1].split())


def interrupt_training(arguments, cwd, timeout=240):
    """Run `numrnn ARGUMENTS` in its own process (``child_env``), press Ctrl-C once its first
    progress line is out, and return (exit code, everything it wrote on stderr)."""
    import signal
    import subprocess
    import sys
    import time

    proc = subprocess.Popen(
        [sys.executable, "-m", "numrnn_cli", *arguments],
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
        env=child_env(),
    )
    seen = []
    deadline = time.monotonic() + timeout
    for line in proc.stderr:
        seen.append(line)
        if line.startswith("step") and "epoch" in line:
            break
        assert time.monotonic() < deadline, "".join(seen)
    proc.send_signal(signal.SIGINT)
    seen.append(proc.stderr.read())
    return proc.wait(timeout=120), "".join(seen)


def labelled_trainer(task, path, *, events=None, resume=None, rng=None, **options):
    """A Trainer for a small labelled-data task: batch 10, lr 1e-2, evaluation and checkpoints
    every 5 steps, a progress event every step, no epoch limit (``options`` override)."""
    from numrnn.trainer import TrainConfig, Trainer

    config = TrainConfig(
        batch_size=10, lr=1e-2, eval_every=5, checkpoint_every=5, log_every=1, max_epochs=0, **options
    )
    return Trainer(
        task, config, path, on_event=events.append if events is not None else None, resume=resume, rng=rng
    )


def step_losses(events):
    """(step, loss) of every StepDone event."""
    from numrnn.trainer import StepDone

    return [(e.step, e.loss) for e in events if isinstance(e, StepDone)]


SAMPLE_CORPUS = Path(__file__).resolve().parents[1] / "data" / "shakespeare.txt"
# ../shared/data beside the project (absent on a user's machine: tests using it skip).
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
# `numrnn train` options for a model small enough to train in a test.
SMALL_LM = [
    "--hidden",
    "16",
    "--layers",
    "1",
    "--embed",
    "8",
    "--seq-len",
    "16",
    "--batch-size",
    "4",
    "--eval-every",
    "10",
    "--checkpoint-every",
    "10",
    "--log-every",
    "5",
]


def recurrence_split(cell, dtype, B, H):
    """How a layer of B rows and H units splits its steps: "rows", "units", or None (whole)."""
    from numrnn.kernels import cpu  # here: most helpers' users need no kernels

    G = GATES_PER_CELL[cell] * H
    like = np.zeros(1, dtype)
    forward = cpu._part_count(B, H, G, H, like)
    backward = cpu._part_count(B, G, H, H, like)
    if forward == 1 or backward == 1:
        return None
    Wh = np.zeros((H, G), dtype)
    split = "rows" if cpu._by_rows(B, forward, Wh) else "units"
    assert split == ("rows" if cpu._by_rows(B, backward, Wh.T) else "units")
    return split
