"""What the machine allows speed.py's rows at best: the float32 GEMM peak (a child of its own,
at the start and the end of the run), the rate of each row's per-time-step products (a child)
and the time of all of a training step's products (inside numrnn's training child), and the
read bandwidth over a buffer the size of a batch-1 step's weights (measured inside numrnn's
sampling child).
"""

import os
from functools import partial

from harness import median, run_in_own_process_or_error, time_calls
from speed_setup import FLOAT32_BYTES, THREADS, Job, child_env, say, step_product_flops

GEMM_N = 2048
READS_PER_CALL = 8  # buffer reads per call of the threaded bandwidth probe


def read_bandwidth(nbytes, min_seconds):
    """Bytes/s reading a float32 buffer of ``nbytes`` over and over, a median per method.

    One thread (as ``numrnn sample`` runs its BLAS): the best of numpy sum, A @ x and x @ A
    (a batch-1 step's products, both orientations). THREADS threads: x @ A over each thread's
    share of the rows at the same time (numpy lets go of the GIL), READS_PER_CALL reads per
    call so that handing work to the threads costs little; never less than one thread.
    """
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    cols = 1024
    rows = max(THREADS, -(-nbytes // (FLOAT32_BYTES * cols)))
    buffer = np.full((rows, cols), 0.5, dtype=np.float32)
    x_cols, out_rows = np.ones(cols, np.float32), np.empty(rows, np.float32)
    x_rows, out_cols = np.ones(rows, np.float32), np.empty(cols, np.float32)
    shares = [
        (part, np.ones(part.shape[0], np.float32), np.empty(cols, np.float32))
        for part in np.array_split(buffer, THREADS)
    ]

    def read_share(share):
        part, x, out = share
        for _ in range(READS_PER_CALL):
            np.matmul(x, part, out=out)

    def rate(call, reads=1):
        _, timed = time_calls(call, warmup=3, min_calls=20, min_seconds=min_seconds, max_calls=5000)
        return reads * buffer.nbytes / median(timed)

    single = {
        "sum": rate(lambda: buffer.sum()),
        "A@x": rate(lambda: np.matmul(buffer, x_cols, out=out_rows)),
        "x@A": rate(lambda: np.matmul(x_rows, buffer, out=out_cols)),
    }
    with ThreadPoolExecutor(THREADS) as pool:
        threaded = rate(lambda: list(pool.map(read_share, shares)), READS_PER_CALL)
    best = max(single, key=single.get)
    return dict(
        bytes_per_s=single[best],
        method=best,
        rates=single,
        threaded_bytes_per_s=max(threaded, single[best]),
        threads=THREADS,
        buffer_bytes=int(buffer.nbytes),
    )


def child_gemm_peak(job):
    """float32 GFLOP/s of an n^3 numpy matmul with this process's BLAS threads (median)."""
    import numpy as np

    rng = np.random.default_rng(job.seed)
    a, b = (rng.standard_normal((GEMM_N, GEMM_N), dtype=np.float32) for _ in range(2))
    c = np.empty_like(a)
    _, timed = time_calls(
        lambda: np.matmul(a, b, out=c), warmup=2, min_calls=job.runs, min_seconds=0.0, max_calls=job.runs
    )
    flops = 2.0 * GEMM_N**3
    return dict(
        gflops=flops / median(timed) / 1e9,
        best_gflops=flops / min(timed) / 1e9,
        run_s=timed,
        n=GEMM_N,
        openblas_env=os.environ.get("OPENBLAS_NUM_THREADS"),
    )


def _compiled_product_loops():
    """(forward, backward): numba loops of T per-step products through the helpers numrnn's
    compiled recurrences call, split the same way (runs of rows or parts of units) on
    numrnn's threads; compiled once a process, and cached in numrnn's kernel cache (the run's)."""
    global _PRODUCT_LOOPS
    if _PRODUCT_LOOPS is not None:
        return _PRODUCT_LOOPS
    import numba

    from numrnn.kernels import cpu, microkernel

    @numba.njit(nogil=True, parallel=True, cache=True)
    def forward(hw, h, Wh, packed, steps):
        B, H = h.shape
        G = Wh.shape[1]
        parts = cpu._part_count(B, H, G, H, Wh)
        if parts > 1:
            microkernel.pack(packed, Wh, G // H)
        q0, q1, j0, j1 = cpu._part_units(0, 1, H, Wh)  # the whole
        if parts == 1:
            for _ in range(steps):
                cpu._step_product(hw, h, Wh, packed, False, G // H, 0, B, False, q0, q1, j0, j1)
        elif cpu._by_rows(B, parts, Wh):
            for p in numba.prange(parts):  # each part's rows through all steps, one region
                r0, r1 = cpu._part_rows(p, parts, B)
                for _ in range(steps):
                    cpu._step_product(hw, h, Wh, packed, True, G // H, r0, r1, False, q0, q1, j0, j1)
        else:
            for _ in range(steps):  # a region a step, a part of the units each
                for p in numba.prange(parts):
                    q0, q1, j0, j1 = cpu._part_units(p, parts, H, Wh)
                    cpu._step_product(hw, h, Wh, packed, True, G // H, 0, B, False, q0, q1, j0, j1)

    @numba.njit(nogil=True, parallel=True, cache=True)
    def backward(dh, dgates, Wh, packed, scratch, steps):
        B, H = dh.shape
        G = Wh.shape[1]
        parts = cpu._part_count(B, G, H, H, Wh)
        if parts > 1:
            microkernel.pack(packed, Wh.T, 1)
        q0, q1, _, _ = cpu._part_units(0, 1, H, Wh)  # the whole
        if parts == 1:
            for _ in range(steps):
                cpu._carry_part(dh, dgates, Wh, packed, False, 0, B, False, q0, q1, scratch)
        elif cpu._by_rows(B, parts, Wh):
            for p in numba.prange(parts):
                r0, r1 = cpu._part_rows(p, parts, B)
                for _ in range(steps):
                    cpu._carry_part(dh, dgates, Wh, packed, True, r0, r1, False, q0, q1, scratch)
        else:
            for _ in range(steps):
                for p in numba.prange(parts):
                    q0, q1, _, _ = cpu._part_units(p, parts, H, Wh)
                    cpu._carry_part(dh, dgates, Wh, packed, True, 0, B, False, q0, q1, scratch)

    _PRODUCT_LOOPS = forward, backward
    return _PRODUCT_LOOPS


_PRODUCT_LOOPS = None


def step_product_seconds(row, seed, min_seconds, min_calls=20):
    """Seconds of one layer's per-time-step products for a training step of ``row``: T
    products ``h @ W_hh`` (B x H by H x G) forward and T ``dgates @ W_hh.T`` backward, on the
    weight's panels packed once, one compiled loop each, the fastest of many calls (a bound
    takes the best these products did: on a shared machine the median of a short child
    swings by a third). The same h and dgates every step: in a recurrence each step's operand
    was just written by the gate loop before it, so it is in cache too."""
    import numpy as np

    from numrnn.kernels import cpu

    forward, backward = _compiled_product_loops()
    rng = np.random.default_rng(seed)
    T, B, H, G = row.seq_len, row.batch, row.hidden, row.gate_width
    h = rng.standard_normal((B, H), dtype=np.float32)
    dgates = rng.standard_normal((B, G), dtype=np.float32)
    Wh = rng.standard_normal((H, G), dtype=np.float32)
    hw, dh = np.empty((B, G), np.float32), np.empty((B, H), np.float32)
    packed = np.empty(cpu.packed_weight_size(H, G, np.float32), np.float32)
    scratch = np.empty(B * H, np.float32)
    calls = (
        partial(forward, hw, h, Wh, packed, T),
        partial(backward, dh, dgates, Wh, packed, scratch, T),
    )
    timing = dict(warmup=2, min_calls=min_calls, min_seconds=min_seconds, max_calls=1000)
    return sum(min(time_calls(call, **timing)[1]) for call in calls)


def dense_product_seconds(row, seed, min_seconds, min_calls=10):
    """Seconds a training step of ``row`` spends in its products that are not per time step,
    through the calls numrnn's layers make (``_product_rows`` and ``_weight_grad_tn``: two
    halves of the rows on numrnn's threads), the fastest of many calls of each: for each layer
    above the first its input projection ``x @ W_ih`` (with its bias), input gradient ``dgates
    @ W_ih.T`` and weight gradient ``x.T @ dgates``; for every layer the recurrent weight
    gradient ``h.T @ dgates``; the head's ``h @ W``, ``dlogits @ W.T`` and ``h.T @ dlogits``
    (T*B rows each). An LSTM layer above the first computes its two weight gradients as one
    product, ``[x | h].T @ dgates``, with its bias gradients (``stacked_weight_grads``). Layer 0
    looks up rows (of W_ih, or of its embedding's V x G table, whose V x E by E x G products
    take under 0.1% of a step): left out."""
    import numpy as np

    from numrnn.kernels import cpu

    rng = np.random.default_rng(seed)
    N, H, G, V = row.seq_len * row.batch, row.hidden, row.gate_width, row.vocab
    draw = lambda *shape: rng.standard_normal(shape, dtype=np.float32)  # noqa: E731
    h, dgates, dlogits, W, Wy = draw(N, H), draw(N, G), draw(N, V), draw(H, G), draw(H, V)
    b = draw(G)
    empty = lambda *shape: np.empty(shape, np.float32)  # noqa: E731
    gates, logits, dh, dW, dWy = empty(N, G), empty(N, V), empty(N, H), empty(H, G), empty(H, V)
    scratch = empty(2 * (2 * H + 1) * max(G, V))
    above = row.layers - 1
    stacked = above if row.cell == "lstm" else 0
    states = draw(row.seq_len + 1, row.batch, H)
    stacked_grads = partial(
        cpu.stacked_weight_grads,
        dW,
        empty(G),
        empty(H, G),
        empty(G),
        h.reshape(row.seq_len, row.batch, H),
        states,
        dgates.reshape(row.seq_len, row.batch, G),
        scratch,
        empty(N * 2 * H),
    )
    # (how many a step, call); the weight gradient of W_ih and of W_hh: the same product
    calls = (
        (above, partial(cpu._product_rows, gates, h, W, b)),
        (above, partial(cpu._product_rows, dh, dgates, W.T, b[:0])),
        (above - stacked + row.layers - stacked, partial(cpu._weight_grad_tn, dW, h, dgates, scratch)),
        (stacked, stacked_grads),
        (1, partial(cpu._product_rows, logits, h, Wy, b[:0])),
        (1, partial(cpu._product_rows, dh, dlogits, Wy.T, b[:0])),
        (1, partial(cpu._weight_grad_tn, dWy, h, dlogits, scratch)),
    )
    timing = dict(warmup=2, min_calls=min_calls, min_seconds=min_seconds, max_calls=500)
    return sum(count * min(time_calls(call, **timing)[1]) for count, call in calls if count)


def product_seconds(row, seed, min_seconds=0.0):
    """Seconds of every product of a training step of ``row``, each at its best rate measured
    now: what the step would take with everything else (gate loops, loss, Adam) free. Timed
    in numrnn's training child right after its steps, so that the bound and the step it
    bounds come from the same moment of a machine whose speed drifts within a run."""
    per_step = step_product_seconds(row, seed, min_seconds, min_calls=5) * row.layers
    return per_step + dense_product_seconds(row, seed, min_seconds, min_calls=5)


def child_step_products(job):
    """GFLOP/s of each row's per-time-step products (step_product_seconds), on numrnn's
    training threads: {row name: GFLOP/s over both}."""
    rates = {}
    for row in job.rows:
        seconds = step_product_seconds(row, job.seed, job.min_seconds)
        # step_product_flops counts every layer; the two loops are one layer's T steps.
        rates[row.name] = step_product_flops(row) / row.layers / seconds / 1e9
    return rates


def measure_step_products(settings):
    """child_step_products for every row, in a child with numrnn's training threads."""
    result, _ = run_in_own_process_or_error(
        child_step_products,
        Job(rows=tuple(settings.rows), seed=settings.seed, min_seconds=min(settings.min_seconds, 0.5)),
        env=child_env("numrnn", "train", settings.kernel_cache),
    )
    if "error" not in result:
        say(
            "per-step products: "
            + ", ".join(f"{name} {gflops:.0f}" for name, gflops in result.items())
            + " GFLOP/s"
        )
    return result


def measure_gemm(settings, when):
    """The GEMM peak in a child of its own, with the thread settings of numrnn's training."""
    result, _ = run_in_own_process_or_error(
        child_gemm_peak,
        Job(runs=settings.gemm_runs, seed=settings.seed),
        env=child_env("numrnn", "train", settings.kernel_cache),
    )
    if "error" not in result:
        say(
            f"GEMM peak ({when}): {result['gflops']:.0f} GFLOP/s "
            f"(float32 {GEMM_N}^3, {THREADS} threads, median of {settings.gemm_runs})"
        )
    return result
