"""Register-blocked products on packed panels: the recurrences' per-step products.

A recurrence multiplies a small block of states (B rows, B = 50 or 64) by the same weight at
every one of its T steps. OpenBLAS repacks that weight into its panel layout at every call,
which at these shapes costs about a third of the product (one thread, float32, Zen 4: 70-80
GFLOP/s against a core's 115); and below about a million multiply-adds it runs one thread.
Here the weight is packed once per kernel call and every step's product runs on those panels:

    packed (Q * blocks, K, NR): panel q * blocks + g holds columns g*H + q*NR .. + NR of the
        (K, blocks*H) weight, zero past H; a part of the units (chunks q0:q1) reads its
        panels in one contiguous run.

``tile`` is the micro-kernel: ROWS rows of the left operand by one panel, ROWS x NR
accumulators kept in vector registers (NR = 2 vectors), one fused multiply-add per vector and
step of k. It is written in LLVM IR (numba's ``intrinsic``) because LLVM does not turn
numba's loops into this register blocking (a scalar-accumulator numba product measured 6-7
GFLOP/s). The same source serves float32 and float64 (the tests and gradcheck run the float64
one): the vector holds 64 bytes of either on a CPU with AVX-512, 32 bytes elsewhere.

Measured (Zen 4, float32, one thread against OpenBLAS's one thread, panels packed beforehand):
50 x 128 by 128 x 128 108-115 against 112, 50 x 128 by 128 x 512 110-116 against 78-80, 50 x 512
by 512 x 2048 104-113 against 69-75, 64 x 1024 by 1024 x 4096 92-102 against 62-66 GFLOP/s.
On two threads, one panel run each, the per-step products reach 179-206 GFLOP/s at B, C and D
(benchmarks/speed.py), above OpenBLAS's 2048^3 GEMM (186-204).
"""

import numba
from llvmlite import binding as llvm_binding
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from numrnn import tunables


def _has_avx512():
    features = numba.config.CPU_FEATURES
    if features:
        return "+avx512f" in features.split(",")
    try:
        return bool(llvm_binding.get_host_cpu_features().get("avx512f", False))
    except RuntimeError:  # a host llvmlite cannot describe: the narrow vectors are safe
        return False


VECTOR_BYTES = 64 if _has_avx512() else 32
# Rows of a tile: ROWS x 2 accumulators, 2 panel vectors and a broadcast must fit the vector
# registers (32 with AVX-512, 16 with AVX2).
ROWS = 10 if VECTOR_BYTES == 64 else 6
VECTORS = 2
# The row counts a tile has a loop of its own for: every count up to ROWS, so that a product's
# rows split into the fewest tiles, as even as they go (_tile_rows). A 1-row tile has two
# chains of FMAs where the FMA units need eight: 25 rows as 6+6+6+6+1 ran 8-13% slower than as
# five tiles of 5, 13 rows as 6+6+1 14-17% slower than as 5+4+4 (Zen 3, one thread, 4 gate
# blocks of H = 128 and 512). With these loops LLVM also keeps the ROWS loop's accumulators in
# registers, where with (1, 2, 4, ROWS) it spilled one of the twelve to the stack (the same
# tiles, 12 x 512 by 512 x 2048, alternating rounds: 1.17-1.34x).
TILE_ROWS = tuple(range(1, ROWS + 1))


def panel_width(array):
    """NR, the columns of a panel for ``array``'s dtype (compiled code only)."""
    return VECTORS * VECTOR_BYTES // array.dtype.itemsize


@overload(panel_width)
def _panel_width_overload(array):
    width = VECTORS * VECTOR_BYTES * 8 // array.dtype.bitwidth
    return lambda array: width


def _data_pointer(context, builder, array_type, array):
    return context.make_array(array_type)(context, builder, array).data


@intrinsic
def tile(typingctx, C, c_off, ldc, A, a_off, a_row, a_k, rows, P, p_off, K, width, accumulate):
    """C[c_off + i*ldc + j] (+)= sum_k A[a_off + i*a_row + k*a_k] * P[p_off + k*NR + j]
    for i < rows (one of TILE_ROWS) and j < width (<= NR); offsets and strides in elements.

    Each row count has its own loop (a switch on ``rows``); ``accumulate`` adds to C instead of
    overwriting it. Each output is one sequential chain of fused multiply-adds over
    k, so a result never depends on how the columns are split between threads."""
    if not all(isinstance(a, types.Array) for a in (C, A, P)) or not (C.dtype == A.dtype == P.dtype):
        return None
    signature = types.void(
        C,
        types.intp,
        types.intp,
        A,
        types.intp,
        types.intp,
        types.intp,
        types.intp,
        P,
        types.intp,
        types.intp,
        types.intp,
        types.boolean,
    )
    dtype = C.dtype

    def codegen(context, builder, sig, args):
        c, c_off, ldc, a, a_off, a_row, a_k, rows, p, p_off, K, width, accumulate = args
        element = context.get_value_type(dtype)
        lanes = VECTOR_BYTES // (dtype.bitwidth // 8)
        NR = VECTORS * lanes
        vector = ir.VectorType(element, lanes)
        vector_ptr = vector.as_pointer()
        intp = context.get_value_type(types.intp)

        def const(value):
            return ir.Constant(intp, value)

        c_ptr = builder.gep(_data_pointer(context, builder, sig.args[0], c), [c_off])
        a_ptr = builder.gep(_data_pointer(context, builder, sig.args[3], a), [a_off])
        p_ptr = builder.gep(_data_pointer(context, builder, sig.args[8], p), [p_off])
        fma = cgutils.get_or_insert_function(
            builder.module,
            ir.FunctionType(vector, [vector, vector, vector]),
            f"llvm.fma.v{lanes}f{dtype.bitwidth}",
        )
        zero = ir.Constant(vector, [ir.Constant(element, 0.0)] * lanes)
        undef = ir.Constant(vector, ir.Undefined)
        splat = ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes)
        # Every row count's loop leaves its accumulators in this stack tile; one shared tail
        # then writes the tile's rows to C (keeps the IR, and numba's compile time, small).
        tile_type = ir.ArrayType(vector, ROWS * VECTORS)
        tile = cgutils.alloca_once(builder, tile_type)

        def tile_slot(i, v):
            return builder.gep(
                tile, [ir.Constant(ir.IntType(32), 0), ir.Constant(ir.IntType(32), i * VECTORS + v)]
            )

        def emit(count):
            # the loop for exactly ``count`` rows, so that a short tile (a batch of one, the
            # last rows of a batch) does only its own rows' work
            row_ptrs = [builder.gep(a_ptr, [builder.mul(const(i), a_row)]) for i in range(count)]
            accumulators = [[tile_slot(i, v) for v in range(VECTORS)] for i in range(count)]
            for row in accumulators:
                for accumulator in row:
                    builder.store(zero, accumulator)
            with cgutils.for_range(builder, K) as loop:
                k = loop.index
                panel_row = builder.gep(p_ptr, [builder.mul(k, const(NR))])
                panel = []
                for v in range(VECTORS):
                    address = builder.bitcast(builder.gep(panel_row, [const(lanes * v)]), vector_ptr)
                    panel.append(builder.load(address, align=4))
                a_step = builder.mul(k, a_k)
                for i in range(count):
                    value = builder.load(builder.gep(row_ptrs[i], [a_step]))
                    broadcast = builder.shuffle_vector(
                        builder.insert_element(undef, value, ir.Constant(ir.IntType(32), 0)), undef, splat
                    )
                    for v in range(VECTORS):
                        total = builder.call(fma, [broadcast, panel[v], builder.load(accumulators[i][v])])
                        builder.store(total, accumulators[i][v])

        done = builder.append_basic_block("tile.computed")
        switch = builder.switch(rows, done)
        for count in TILE_ROWS:
            block = builder.append_basic_block(f"tile.rows{count}")
            switch.add_case(const(count), block)
            builder.position_at_end(block)
            emit(count)
            builder.branch(done)
        builder.position_at_end(done)

        element_tile = builder.bitcast(tile, element.as_pointer())
        with cgutils.for_range(builder, rows) as row_loop:
            i = row_loop.index
            out_row = builder.gep(c_ptr, [builder.mul(i, ldc)])
            tile_row = builder.gep(element_tile, [builder.mul(i, const(NR))])
            with builder.if_else(builder.icmp_signed("==", width, const(NR))) as (whole, ragged):
                with whole:
                    for v in range(VECTORS):
                        out = builder.bitcast(builder.gep(out_row, [const(lanes * v)]), vector_ptr)
                        total = builder.load(
                            builder.bitcast(builder.gep(tile_row, [const(lanes * v)]), vector_ptr)
                        )
                        added = builder.fadd(total, builder.load(out, align=4))
                        builder.store(builder.select(accumulate, added, total), out, align=4)
                with ragged:
                    # The last panel of a block narrower than NR: element by element.
                    with cgutils.for_range(builder, width) as lane_loop:
                        out = builder.gep(out_row, [lane_loop.index])
                        total = builder.load(builder.gep(tile_row, [lane_loop.index]))
                        added = builder.fadd(total, builder.load(out))
                        builder.store(builder.select(accumulate, added, total), out)
        return context.get_dummy_value()

    return signature, codegen


_JIT = tunables.jit_options(tunables.configure_numba())
_kernel = numba.njit(**_JIT)
_parallel_kernel = numba.njit(parallel=True, **_JIT)


@_kernel
def packed_size(K, H, blocks, like):
    # elements of the panels of a (K, blocks*H) weight of ``like``'s dtype
    NR = panel_width(like)
    return (H + NR - 1) // NR * blocks * K * NR


@_kernel
def chunks(H, like):
    # Q: the panels of one block (NR columns each, the last one maybe narrower)
    NR = panel_width(like)
    return (H + NR - 1) // NR


# Rows of S packed at a time: a block's rows of every panel before the next block's, so the
# reads stay within a few pages of S and the writes within a few lines of each panel.
PACK_ROWS = 64


@_parallel_kernel
def pack(packed, S, blocks):
    # packed (>= packed_size) out: the panels of S (K, blocks*H), any layout (S may be W.T)
    # Two threads, half of each block's panels each (measured against one thread copying
    # element by element: a (128, 512) weight 60 -> 15 us, as W.T 110 -> 24 us; (1024, 4096)
    # 13.0 -> 3.2 ms, as W.T 12.5 -> 2.8 ms).
    H = S.shape[1] // blocks
    Q = chunks(H, packed)
    for half in numba.prange(2):
        _pack_panels(packed, S, blocks, half * Q // 2, (half + 1) * Q // 2)


@_kernel
def _pack_panels(packed, S, blocks, q0, q1):
    # pack's panels q0:q1 of every block. The loops run over zero-based views (a loop from a
    # variable start keeps numba's negative-index check on every element and runs scalar);
    # they read along S's contiguous axis: its rows (W), or its columns (W.T).
    K, N = S.shape
    H = N // blocks
    NR = panel_width(packed)
    by_rows = S.strides[1] <= S.strides[0]
    for k0 in range(0, K, PACK_ROWS):
        k1 = min(K, k0 + PACK_ROWS)
        for q in range(q0, q1):
            width = min(NR, H - q * NR)
            for g in range(blocks):
                base = (q * blocks + g) * K * NR
                panel = packed[base + k0 * NR : base + k1 * NR].reshape((k1 - k0, NR))
                source = S[k0:k1, g * H + q * NR : g * H + q * NR + width]
                if by_rows:
                    for k in range(k1 - k0):
                        out = panel[k]
                        row = source[k]
                        for j in range(width):
                            out[j] = row[j]
                else:
                    for j in range(width):
                        column = source[:, j]
                        for k in range(k1 - k0):
                            panel[k, j] = column[k]
                if width < NR:  # the last panel of a block: zeros past H
                    for k in range(k1 - k0):
                        tail = panel[k, width:]
                        for j in range(tail.shape[0]):
                            tail[j] = 0.0


@_kernel
def _tile_rows(left):
    # the rows of the next tile of ``left`` rows (> 0): the fewest tiles, as even as they go
    tiles = (left + ROWS - 1) // ROWS
    return (left + tiles - 1) // tiles


@_kernel
def packed_product(C, A, packed, blocks, q0, q1, accumulate):
    # C (n, blocks*H) (+)= A (n, K) @ S, in the columns of chunks q0:q1 of every block only
    # (the units of one part); S's panels in packed (see pack). A's rows may be strided views.
    n, K = A.shape
    if n == 0:
        return
    H = C.shape[1] // blocks
    NR = panel_width(packed)
    a_row = A.strides[0] // A.itemsize
    a_k = A.strides[1] // A.itemsize
    ldc = C.strides[0] // C.itemsize
    for q in range(q0, q1):
        width = min(NR, H - q * NR)
        for g in range(blocks):
            p_off = (q * blocks + g) * K * NR
            i = 0
            while i < n:
                rows = _tile_rows(n - i)
                tile(
                    C,
                    i * ldc + g * H + q * NR,
                    ldc,
                    A,
                    i * a_row,
                    a_row,
                    a_k,
                    rows,
                    packed,
                    p_off,
                    K,
                    width,
                    accumulate,
                )
                i += rows
