"""The optimizer kernels against plain numpy and, where installed, torch.optim."""

import numpy as np
import pytest

from numrnn.kernels import cpu

RTOL = 1e-12
STEPS = 5


def _trajectory(update, rng, n_state, **hyper):
    """Parameters after STEPS updates with fixed random gradients, from the kernel."""
    params = rng.standard_normal(20)
    grads = [rng.standard_normal(20) for _ in range(STEPS)]
    state = [np.zeros(20) for _ in range(n_state)]
    out = params.copy()
    for step, g in enumerate(grads, start=1):
        args = dict(hyper, step=step) if update is cpu.adam_update else hyper
        update(out, g, *state, **args)
    return params, grads, out


def test_adam(rng):
    params, grads, got = _trajectory(cpu.adam_update, rng, 2, lr=2e-3, beta1=0.9, beta2=0.999, eps=1e-8)
    m = np.zeros(20)
    v = np.zeros(20)
    p = params.copy()
    for t, g in enumerate(grads, start=1):
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        p -= 2e-3 * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
    np.testing.assert_allclose(got, p, rtol=1e-10)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adam_splits_large_updates_without_changing_a_bit(dtype, rng):
    # From _PARALLEL_UPDATE_WORK parameters the update runs on two halves, one thread each;
    # every element is its own computation, so the bits equal one loop's, and both the numpy
    # reference's (float64) to rounding.
    P = cpu._PARALLEL_UPDATE_WORK + 7
    params = rng.standard_normal(P).astype(dtype)
    m = (rng.standard_normal(P) * 0.1).astype(dtype)
    v = (rng.random(P) * 0.1).astype(dtype)
    grads = rng.standard_normal(P).astype(dtype)
    lr, beta1, beta2, eps, step = 2e-3, 0.9, 0.999, 1e-8, 3
    split = [a.copy() for a in (params, m, v)]
    cpu.adam_update(split[0], grads, split[1], split[2], lr, beta1, beta2, eps, step)
    whole = [a.copy() for a in (params, m, v)]
    step_size, bias2_sqrt = lr / (1 - beta1**step), np.sqrt(1 - beta2**step)
    cpu._adam_elements(whole[0], grads, whole[1], whole[2], beta1, beta2, eps, step_size, bias2_sqrt)
    for got, expected in zip(split, whole):
        np.testing.assert_array_equal(got, expected)
    g = grads.astype(np.float64)
    m_ref = beta1 * m + (1 - beta1) * g
    v_ref = beta2 * v + (1 - beta2) * g * g
    p_ref = params - lr * (m_ref / (1 - beta1**step)) / (np.sqrt(v_ref / (1 - beta2**step)) + eps)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(split[0], p_ref, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(split[1], m_ref, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(split[2], v_ref, rtol=rtol, atol=rtol)


def test_adagrad_rmsprop_sgd(rng):
    params, grads, got = _trajectory(cpu.adagrad_update, rng, 1, lr=0.1, eps=1e-10)
    s = np.zeros(20)
    p = params.copy()
    for g in grads:
        s += g * g
        p -= 0.1 * g / (np.sqrt(s) + 1e-10)
    np.testing.assert_allclose(got, p, rtol=RTOL)

    params, grads, got = _trajectory(cpu.rmsprop_update, rng, 1, lr=0.01, alpha=0.99, eps=1e-8)
    s = np.zeros(20)
    p = params.copy()
    for g in grads:
        s = 0.99 * s + 0.01 * g * g
        p -= 0.01 * g / (np.sqrt(s) + 1e-8)
    np.testing.assert_allclose(got, p, rtol=RTOL)

    params, grads, got = _trajectory(cpu.sgd_update, rng, 1, lr=0.1, momentum=0.9)
    buf = np.zeros(20)
    p = params.copy()
    for g in grads:
        buf = 0.9 * buf + g
        p -= 0.1 * buf
    np.testing.assert_allclose(got, p, rtol=RTOL)


@pytest.mark.parametrize("name", ["adam", "adagrad", "rmsprop", "sgd"])
def test_matches_torch_optim(name, rng):
    torch = pytest.importorskip("torch", reason="torch is not installed; parity tests need it")
    setups = {
        "adam": (
            cpu.adam_update,
            2,
            dict(lr=2e-3, beta1=0.9, beta2=0.999, eps=1e-8),
            lambda p: torch.optim.Adam([p], lr=2e-3, betas=(0.9, 0.999), eps=1e-8),
        ),
        "adagrad": (
            cpu.adagrad_update,
            1,
            dict(lr=0.1, eps=1e-10),
            lambda p: torch.optim.Adagrad([p], lr=0.1, eps=1e-10),
        ),
        "rmsprop": (
            cpu.rmsprop_update,
            1,
            dict(lr=0.01, alpha=0.99, eps=1e-8),
            lambda p: torch.optim.RMSprop([p], lr=0.01, alpha=0.99, eps=1e-8),
        ),
        "sgd": (
            cpu.sgd_update,
            1,
            dict(lr=0.1, momentum=0.9),
            lambda p: torch.optim.SGD([p], lr=0.1, momentum=0.9),
        ),
    }
    update, n_state, hyper, make = setups[name]
    params, grads, got = _trajectory(update, rng, n_state, **hyper)
    p = torch.tensor(params, requires_grad=True)
    optimizer = make(p)
    for g in grads:
        p.grad = torch.tensor(g)
        optimizer.step()
    np.testing.assert_allclose(got, p.detach().numpy(), rtol=1e-10, atol=1e-14)
