"""tanh, sigmoid and exp for the CPU kernels: exact in float64, fast and vectorisable in float32.

Without SVML, numba compiles ``math.tanh``/``math.exp`` to one libm call per element (about
12 ns each, DESIGN.md section 8), which made the gate loops the largest part of a training
step. In float32 these functions use a branch-free rational approximation instead (Eigen's
``generic_fast_tanh_float``: odd degree-13 over even degree-6 polynomial on a clamped input,
its steps fused into multiply-adds where the CPU has them: measured max abs error 2.6e-7 on
[-20, 20] against float64 tanh, see the tests), which LLVM vectorises. float64 (the tests and
gradcheck) keeps the exact functions, so the finite difference checks stay meaningful.

``exp`` (the softmax's) is Cephes' ``expf`` in float32: ``2^n * e^r`` with ``|r| <= ln(2)/2``,
a degree-7 polynomial for ``e^r`` and ``2^n`` built from its exponent bits (measured max
relative error 8e-8 against float64 exp on [-87, 88]; above 88.38 it gives the largest
result instead of inf, which a softmax of shifted logits, all <= 0, never asks for).

The dispatch happens at compile time through ``numba.extending.overload``: a kernel calls
``tanh(x)`` and numba picks the implementation from the type of ``x``.
"""

import math

import numpy as np
from llvmlite import binding as llvm
from llvmlite import ir
from numba import config, types
from numba.extending import intrinsic, overload

_f32 = np.float32


def _compiles_for_fma():
    # Whether numba's code for this machine has fused multiply-adds: the host's features,
    # unless NUMBA_CPU_NAME/NUMBA_CPU_FEATURES name another target (then only if those say so).
    if config.CPU_FEATURES:
        return "+fma" in config.CPU_FEATURES.split(",")
    if config.CPU_NAME:
        return False
    return bool(llvm.get_host_cpu_features().get("fma", False))


# |x| above this gives tanh(x) = +-1 in float32; clamping keeps the rational in range. Eigen's
# two clamps: the polynomials' steps as fused multiply-adds reach 1 a little later.
_FUSED = _compiles_for_fma()
_CLAMP = _f32(7.99881172180175781) if _FUSED else _f32(7.90531110763549805)
_A1, _A3, _A5, _A7 = (
    _f32(4.89352455891786e-03),
    _f32(6.37261928875436e-04),
    _f32(1.48572235717979e-05),
    _f32(5.12229709037114e-08),
)
_A9, _A11, _A13 = _f32(-8.60467152213735e-11), _f32(2.00018790482477e-13), _f32(-2.76076847742355e-16)
_B0, _B2, _B4, _B6 = (
    _f32(4.89352518554385e-03),
    _f32(2.26843463243900e-03),
    _f32(1.18534705686654e-04),
    _f32(1.19825839466702e-06),
)
_HALF = _f32(0.5)
# exp: below _EXP_LOW the result would leave float32's normal range (it is clamped there,
# about 1e-38, which a softmax cannot tell from 0); above _EXP_HIGH it would overflow.
_EXP_LOW, _EXP_HIGH = _f32(-87.33654), _f32(88.37626)
_LOG2E = _f32(1.44269504088896341)
_LN2_HI, _LN2_LO = _f32(0.693359375), _f32(-2.12194440e-4)
_E0, _E1, _E2 = _f32(1.9875691500e-4), _f32(1.3981999507e-3), _f32(8.3334519073e-3)
_E3, _E4, _E5 = _f32(4.1665795894e-2), _f32(1.6666665459e-1), _f32(5.0000001201e-1)
_ONE = _f32(1.0)
# The float32 forms' multiply-adds may be fused (contract, nothing else): a quarter fewer
# instructions in the gate loops (measured 4.2 -> 3.1 ns per LSTM element, C size).
_FLOAT32_OPTIONS = {"fastmath": {"contract"}}


def tanh(x):
    """tanh; in compiled code, the fast form for float32 arguments."""
    return math.tanh(x)


def sigmoid(x):
    """The logistic function; in compiled code, the fast form for float32 arguments."""
    return _sigmoid_exact(x)


def _tanh_float32(x):
    # Written as selects (not min/max) so that a NaN passes through: the trainer must see it.
    x = _CLAMP if x > _CLAMP else x
    x = -_CLAMP if x < -_CLAMP else x
    x2 = x * x
    p = x2 * _A13 + _A11
    p = x2 * p + _A9
    p = x2 * p + _A7
    p = x2 * p + _A5
    p = x2 * p + _A3
    p = x2 * p + _A1
    q = x2 * _B6 + _B4
    q = x2 * q + _B2
    q = x2 * q + _B0
    return x * p / q


def _sigmoid_float32(x):
    # sigmoid(x) = (1 + tanh(x / 2)) / 2, branch-free.
    return _HALF * tanh(_HALF * x) + _HALF


def exp(x):
    """e**x; in compiled code, the fast form for float32 arguments."""
    return math.exp(x)


def one_like(x):
    """1 in the type of ``x``. In compiled code a literal ``1.0`` is a float64, and ``1.0 - z``
    for a float32 ``z`` would run in float64 (measured: the GRU's gate loop 1.72 -> 1.28 ns
    per element once its arithmetic stays float32)."""
    return 1.0


@intrinsic
def _float32_with_bits(typingctx, bits):
    # The float32 whose IEEE bit pattern is the low 32 bits of the integer ``bits``.
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        word = args[0]
        if bits.bitwidth > 32:
            word = builder.trunc(word, ir.IntType(32))
        elif bits.bitwidth < 32:
            word = builder.sext(word, ir.IntType(32))
        return builder.bitcast(word, ir.FloatType())

    return types.float32(bits), codegen


def _exp_float32(x):
    # Selects, not min/max, so that a NaN passes through (as in tanh).
    x = _EXP_HIGH if x > _EXP_HIGH else x
    x = _EXP_LOW if x < _EXP_LOW else x
    n = np.floor(x * _LOG2E + _HALF)
    r = x - n * _LN2_HI - n * _LN2_LO
    p = r * _E0 + _E1
    p = r * p + _E2
    p = r * p + _E3
    p = r * p + _E4
    p = r * p + _E5
    p = (r * r) * p + r + _ONE
    return p * _float32_with_bits((np.int32(n) + np.int32(127)) << np.int32(23))


def _sigmoid_exact(x):
    # Two branches so exp never overflows.
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def _is_float32(x):
    return isinstance(x, types.Float) and x.bitwidth == 32


@overload(tanh, jit_options=_FLOAT32_OPTIONS)
def _tanh_overload(x):
    if _is_float32(x):
        return _tanh_float32
    return lambda x: math.tanh(x)


@overload(sigmoid, jit_options=_FLOAT32_OPTIONS)
def _sigmoid_overload(x):
    if _is_float32(x):
        return _sigmoid_float32
    return _sigmoid_exact


@overload(one_like)
def _one_like_overload(x):
    if _is_float32(x):
        return lambda x: _ONE
    return lambda x: 1.0


@overload(exp, jit_options=_FLOAT32_OPTIONS)
def _exp_overload(x):
    if _is_float32(x):
        return _exp_float32
    return lambda x: math.exp(x)
