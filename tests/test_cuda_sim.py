"""Level 2 for the CUDA backend: every CUDA launcher equals the CPU kernel of the same name,
under numba's CUDA simulator (no GPU needed), on tiny shapes with threads per block patched
small so that several blocks and the bounds checks run.

The simulator must be switched on before numba loads, so these tests run in a pytest process
of their own: ``NUMBA_ENABLE_CUDASIM=1 python -m pytest tests/test_cuda_sim.py`` (.ci/run and
the README's test command do). In the main run they are skipped with that reason. On a
machine with a GPU the same tests run on it with ``NUMRNN_TEST_GPU=1`` instead
(``benchmarks/gpu_check.sh``); the simulator-only ones say so.
"""

import os

import numpy as np
import pytest

SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
ON_GPU = os.environ.get("NUMRNN_TEST_GPU") == "1" and not SIMULATOR

pytest.importorskip("numba_cuda", reason="numba-cuda is not installed (pip install -e '.[test]')")
pytestmark = pytest.mark.skipif(
    not (SIMULATOR or ON_GPU),
    reason="the CUDA simulator runs only when NUMBA_ENABLE_CUDASIM=1 is set before Python starts: "
    "NUMBA_ENABLE_CUDASIM=1 python -m pytest tests/test_cuda_sim.py (.ci/run runs it); "
    "on a GPU, NUMRNN_TEST_GPU=1 runs these tests there",
)
simulator_only = pytest.mark.skipif(not SIMULATOR, reason="checks the simulator's stand-in for GPU memory")

from numrnn.cells import GATES_PER_CELL  # noqa: E402
from numrnn.kernels import cpu  # noqa: E402

TOLERANCE = {np.float64: (1e-12, 1e-13), np.float32: (1e-5, 1e-6)}
CELLS = ["rnn", "lstm", "gru"]


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    from numrnn.kernels import cuda

    assert cuda.SIMULATED == SIMULATOR
    monkeypatch.setattr(cuda, "THREADS", (2, 3))  # H 5, B 4: several blocks, ragged edges


@pytest.fixture(autouse=True)
def device_memory_only(monkeypatch):
    """Kernel launches refuse host arrays (a GPU would copy them over and back at every
    launch); with the backend's arrays refusing to mix with host ones (simulated.py), a host
    array left in a device path fails here as it would on a GPU. (On a GPU, CuPy refuses.)"""
    if not SIMULATOR:
        return
    from numba.cuda.simulator.kernel import FakeCUDAKernel

    from numrnn.kernels.simulated import _refuse_host

    launch = FakeCUDAKernel.__call__

    def checked(self, *args):
        _refuse_host(args, f"kernel {self.fn.__name__}")
        return launch(self, *args)

    monkeypatch.setattr(FakeCUDAKernel, "__call__", checked)


@simulator_only
def test_host_arrays_are_refused_on_the_simulated_device():
    """The guard above and simulated.py's arrays catch what CuPy would refuse."""
    from numrnn.kernels import cuda
    from numrnn.kernels.simulated import HostMixError

    device = cuda.xp.zeros((3, 4))
    with pytest.raises(HostMixError, match="kernel _square_sums_kernel"):
        cuda.clip_global_norm(np.ones(12), 1.0)
    with pytest.raises(HostMixError, match="numpy.add"):
        device + np.ones((3, 4))
    with pytest.raises(HostMixError, match="assignment"):
        device[...] = np.ones((3, 4))
    with pytest.raises(HostMixError, match="index"):
        device[np.arange(2)]
    device[...] = cuda.to_device(np.arange(12.0).reshape(3, 4))  # the explicit crossing
    device[1] = 2.5  # scalars are not arrays
    assert float(cuda.clip_global_norm(device.reshape(-1), 1.0)) > 1.0
    assert type(cuda.to_host(device)) is np.ndarray
    np.testing.assert_allclose(np.linalg.norm(cuda.to_host(device)), 1.0, rtol=1e-6)


def forward_args(cell, rng, dtype, T=4, B=4, H=5, active=None):
    """The arguments of {cell}_forward (fresh arrays), and the active row counts."""
    G = GATES_PER_CELL[cell] * H
    u = lambda *shape: rng.uniform(-0.9, 0.9, shape).astype(dtype)  # noqa: E731
    active = np.full(T, B, np.intp) if active is None else np.asarray(active, np.intp)
    hs = np.zeros((T + 1, B, H), dtype)
    hs[0] = u(B, H)
    xg = u(T, B, G)
    Wh, bh, hw = u(H, G), u(G), np.zeros((B, G), dtype)
    packed = np.zeros(cpu.packed_weight_size(H, G, dtype), dtype)  # the CPU's; unused on the GPU
    if cell == "rnn":
        return dict(hs=hs, xg=xg, active=active, Wh=Wh, bh=bh, hw=hw, packed=packed)
    if cell == "lstm":
        cs = np.zeros((T + 1, B, H), dtype)
        cs[0] = u(B, H)
        return dict(hs=hs, cs=cs, gates=xg, active=active, Wh=Wh, bh=bh, hw=hw, packed=packed)
    hn = np.zeros((T, B, H), dtype)
    return dict(hs=hs, gates=xg, hn=hn, active=active, Wh=Wh, bh=bh, hw=hw, packed=packed)


def run_both(name, args):
    """Call cpu.NAME and cuda.NAME on their own copies of args; returns both copies."""
    from numrnn.kernels import cuda

    results = []
    for module in (cpu, cuda):
        copied = {
            key: value.copy() if key == "active" else _copy_to(module, value) for key, value in args.items()
        }
        getattr(module, name)(**copied)
        results.append({key: _copy_to(cpu, value) for key, value in copied.items()})
    return results


def _copy_to(module, value):
    """A copy of value's arrays in module's memory (host or device); host metadata (the
    ``active`` row counts the launchers loop over) stays on the host."""
    if isinstance(value, tuple):
        return tuple(_copy_to(module, item) for item in value)
    if not isinstance(value, np.ndarray):
        return value
    return (
        module.to_device(module.to_host(value).copy()) if module is not cpu else module.to_host(value).copy()
    )


def assert_same(expected, got, dtype, skip=()):
    rtol, atol = TOLERANCE[dtype]
    for key, value in expected.items():
        if isinstance(value, np.ndarray) and key not in skip:
            np.testing.assert_allclose(got[key], value, rtol=rtol, atol=atol, err_msg=key)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("active", [None, [4, 3, 3, 1]], ids=["full", "packed"])
@pytest.mark.parametrize("cell", CELLS)
def test_cell_forward_matches_cpu(cell, active, dtype, rng):
    args = forward_args(cell, rng, dtype, active=active)
    expected, got = run_both(f"{cell}_forward", args)
    assert_same(expected, got, dtype, skip=("hw", "packed"))  # workspaces
    assert np.abs(got["hs"][1:]).max() > 0.05  # the steps ran


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("initial_grad", [True, False])
@pytest.mark.parametrize("active", [None, [4, 3, 3, 1]], ids=["full", "packed"])
@pytest.mark.parametrize("cell", CELLS)
def test_cell_backward_matches_cpu(cell, active, initial_grad, dtype, rng):
    T, B, H = 4, 4, 5
    G = GATES_PER_CELL[cell] * H
    forward = forward_args(cell, rng, dtype, T=T, B=B, H=H, active=active)
    getattr(cpu, f"{cell}_forward")(**forward)
    u = lambda *shape: rng.uniform(-0.9, 0.9, shape).astype(dtype)  # noqa: E731
    common = dict(
        dh0=np.zeros((B, H), dtype),
        dWh=u(H, G),  # accumulated into
        dbh=u(G),
        dhs=u(T, B, H),
        dhT=u(B, H),
        hs=forward["hs"],
        active=forward["active"],
        initial_grad=initial_grad,
        Wh=forward["Wh"],
        scratch=np.zeros(H * max(2 * G, B) + G, dtype),
        packed=forward["packed"],
    )
    if cell == "rnn":
        args = dict(dxg=np.zeros((T, B, G), dtype), **common)
    elif cell == "lstm":
        args = dict(
            dgates=np.zeros((T, B, G), dtype),
            dc0=np.zeros((B, H), dtype),
            dcT=u(B, H),
            cs=forward["cs"],
            gates=forward["gates"],
            **common,
        )
    else:
        args = dict(
            dxg=np.zeros((T, B, G), dtype),
            gates=forward["gates"],
            hn=forward["hn"],
            dhg=np.zeros((T, B, G), dtype),
            **common,
        )
    expected, got = run_both(f"{cell}_backward", args)
    # Without initial_grad the initial state's gradients are partial values nobody reads.
    skip = ("scratch", "packed") + (() if initial_grad else ("dh0", "dc0"))
    assert_same(expected, got, dtype, skip=skip)
    assert np.abs(got["dWh"] - args["dWh"]).max() > 1e-3  # gradients accumulated


def test_the_launchers_take_the_cpu_kernels_arguments():
    """Same names, same parameters: a call written for one backend runs on the other. Every
    public function of the CUDA module is a CPU kernel's launcher."""
    import inspect

    from numrnn.kernels import cuda

    launchers = [
        name
        for name, value in vars(cuda).items()
        if inspect.isfunction(value) and not name.startswith("_") and value.__module__ == cuda.__name__
    ]
    launchers.remove("kernel_signatures")
    assert {f"{cell}_{part}" for cell in CELLS for part in ("forward", "backward")} <= set(launchers)
    for name in launchers:
        assert hasattr(cpu, name), f"cuda.{name} has no CPU kernel"
        cpu_function = getattr(cpu, name)
        cpu_params = list(inspect.signature(getattr(cpu_function, "py_func", cpu_function)).parameters)
        assert list(inspect.signature(getattr(cuda, name)).parameters) == cpu_params, name


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_dense_and_lookup_launchers_match_cpu(dtype, rng):
    u = lambda *shape: rng.uniform(-1, 1, shape).astype(dtype)  # noqa: E731
    N, D, K, V = 7, 5, 4, 6
    x, W, b, dy = u(N, D), u(D, K), u(K), u(N, K)
    cases = {
        "bias_forward": dict(y=u(N, K), b=b),
        "bias_backward": dict(db=u(K), dy=dy),
        "linear_forward": dict(y=np.zeros((N, K), dtype), x=x, W=W, b=b),
        "linear_backward": dict(
            dx=np.zeros((N, D), dtype), dW=u(D, K), db=u(K), dy=dy, x=x, W=W, scratch=u(D * K)
        ),
        "matmul": dict(y=np.zeros((N, K), dtype), x=x, W=W),
        "matmul_backward": dict(dx=np.zeros((N, D), dtype), dW=u(D, K), dy=dy, x=x, W=W, scratch=u(D * K)),
        "embed_forward": dict(out=np.zeros((N, K), dtype), tokens=rng.integers(0, V, N), W=u(V, K)),
        # tokens repeat: the scatter must add, not overwrite
        "embed_backward": dict(dW=u(V, K), dout=dy, tokens=np.array([0, 2, 2, 5, 0, 2, 1])),
    }
    for name, args in cases.items():
        expected, got = run_both(name, args)
        assert_same(expected, got, dtype, skip=("scratch",))
    # linear_backward skips dx when it has no rows (an input that needs no gradient), and dW
    # and db when dW has none (a stacked layer's: stacked_weight_grads adds them)
    args = dict(dx=np.zeros((0, D), dtype), dW=u(D, K), db=u(K), dy=dy, x=x, W=W, scratch=u(D * K))
    expected, got = run_both("linear_backward", args)
    assert_same(expected, got, dtype, skip=("scratch",))
    args = dict(dx=np.zeros((N, D), dtype), dW=u(0, K), db=u(0), dy=dy, x=x, W=W, scratch=u(D * K))
    expected, got = run_both("linear_backward", args)
    assert_same(expected, got, dtype, skip=("scratch",))
    assert np.abs(got["dx"]).max() > 0.05


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_stacked_weight_grads_match_cpu(dtype, rng):
    u = lambda *shape: rng.uniform(-1, 1, shape).astype(dtype)  # noqa: E731
    T, B, D, H = 3, 2, 5, 4
    G = 4 * H
    args = dict(
        dWx=u(D, G),  # accumulated into
        dbx=u(G),
        dWh=u(H, G),
        dbh=u(G),
        x=u(T, B, D),
        hs=u(T + 1, B, H),
        dpre=u(T, B, G),
        scratch=u(2 * (D + H + 1) * G),
        joined=u(T * B * (D + H)),
    )
    expected, got = run_both("stacked_weight_grads", args)
    assert_same(expected, got, dtype, skip=("scratch", "joined"))
    assert np.abs(got["dWh"] - args["dWh"]).max() > 1e-3  # gradients accumulated


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_softmax_cross_entropy_matches_cpu(dtype, rng):
    N, V = 9, 7
    logits = (4 * rng.standard_normal((N, V))).astype(dtype)
    targets = rng.integers(0, V, N)
    targets[[2, 5]] = -1  # ignored rows
    expected, got = run_both(
        "softmax_xent_forward", dict(losses=np.zeros(N, dtype), logits=logits, targets=targets)
    )
    assert_same(expected, got, dtype)
    args = dict(
        losses=np.zeros(N, dtype), dlogits=np.zeros((N, V), dtype), logits=logits, targets=targets, scale=0.25
    )
    expected, got = run_both("softmax_xent_fused", args)
    assert_same(expected, got, dtype)
    assert not got["dlogits"][[2, 5]].any()
    # In place (dlogits is logits), as a model does.
    from numrnn.kernels import cuda

    in_place = cuda.to_device(logits)
    cuda.softmax_xent_fused(cuda.xp.zeros(N, dtype), in_place, in_place, cuda.to_device(targets), 0.25)
    np.testing.assert_allclose(
        cuda.to_host(in_place), expected["dlogits"], rtol=TOLERANCE[dtype][0], atol=TOLERANCE[dtype][1]
    )


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_gradient_norm_clipping_and_optimizers_match_cpu(dtype, rng, monkeypatch):
    from numrnn.kernels import cuda

    monkeypatch.setattr(cuda, "REDUCE_THREADS", 8)  # 37 elements: 5 blocks, a ragged last one
    P = 37
    u = lambda *shape: rng.uniform(-1, 1, shape).astype(dtype)  # noqa: E731
    grads = u(P)
    rtol = TOLERANCE[dtype][0]
    assert cuda.global_norm(cuda.to_device(grads)) == pytest.approx(cpu.global_norm(grads), rel=rtol)
    for max_norm in (0.5, 100.0):  # clipped, and left alone
        a, b = cuda.to_device(grads), grads.copy()
        assert cuda.clip_global_norm(a, max_norm) == pytest.approx(
            cpu.clip_global_norm(b, max_norm), rel=rtol
        )
        np.testing.assert_allclose(cuda.to_host(a), b, rtol=rtol)
    params, state = u(P), np.abs(u(P))
    cases = {
        "adam_update": dict(
            params=params, grads=grads, m=u(P), v=state, lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, step=3
        ),
        "adagrad_update": dict(params=params, grads=grads, sum_sq=state, lr=1e-2, eps=1e-10),
        "rmsprop_update": dict(params=params, grads=grads, mean_sq=state, lr=1e-2, alpha=0.99, eps=1e-8),
        "sgd_update": dict(params=params, grads=grads, velocity=u(P), lr=1e-2, momentum=0.9),
    }
    for name, args in cases.items():
        expected, got = run_both(name, args)
        assert_same(expected, got, dtype)
        assert not np.array_equal(got["params"], params), name  # it updated


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("group", [1, 2])
def test_attention_launchers_match_cpu(group, dtype, rng):
    u = lambda *shape: rng.uniform(-1, 1, shape).astype(dtype)  # noqa: E731
    B, T, S, A, D = 4, 3, 5, 6, 4
    queries, keys, values, v = u(B, T, A), u(B // group, S, A), u(B // group, S, D), u(A)
    lengths = np.array([5, 4, 2, 1])
    scores = u(B, T, S)
    cases = {
        "attention_scores": dict(scores=np.zeros((B, T, S), dtype), queries=queries, keys=keys, group=group),
        "additive_scores": dict(
            scores=np.zeros((B, T, S), dtype), queries=queries, keys=keys, v=v, group=group
        ),
        "attention_softmax": dict(weights=scores, lengths=lengths),
        "attention_context": dict(
            context=np.zeros((B, T, D), dtype), weights=scores, values=values, group=group
        ),
    }
    for name, args in cases.items():
        expected, got = run_both(name, args)
        assert_same(expected, got, dtype)
    if group != 1:
        return  # the backward passes are training's: no groups
    weights = scores.copy()
    cpu.attention_softmax(weights, lengths)
    dscores = u(B, T, S) * (weights > 0)  # masked positions get no gradient
    backward = {
        "attention_scores_backward": dict(
            dqueries=np.zeros((B, T, A), dtype),
            dkeys=np.zeros((B, S, A), dtype),
            dscores=dscores,
            queries=queries,
            keys=keys,
        ),
        "additive_scores_backward": dict(
            dqueries=u(B, T, A), dkeys=u(B, S, A), dv=u(A), dscores=dscores, queries=queries, keys=keys, v=v
        ),
        "attention_context_backward": dict(
            dscores=np.zeros((B, T, S), dtype),
            dvalues=np.zeros((B, S, D), dtype),
            dcontext=u(B, T, D),
            weights=weights,
            values=values,
        ),
    }
    for name, args in backward.items():
        expected, got = run_both(name, args)
        assert_same(expected, got, dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_beam_extend_matches_cpu(dtype, rng):
    R, K, V = 5, 3, 7
    logits = (3 * rng.standard_normal((R * K, V))).astype(dtype)
    scores = -rng.uniform(0, 5, (R, K))
    scores[1, 1:] = -np.inf
    scores[2, 0] = -np.inf
    args = dict(best=np.zeros((R, K), np.intp), new_scores=np.zeros((R, K)), logits=logits, scores=scores)
    expected, got = run_both("beam_extend", args)
    np.testing.assert_array_equal(got["best"], expected["best"])
    np.testing.assert_allclose(got["new_scores"], expected["new_scores"], rtol=1e-12)


def networks(rng):
    """(name, build(kernels) -> network, loss_and_grad(network) -> loss) for every topology:
    small float64 networks with the same weights on either backend."""
    from numrnn.model import Model, ModelConfig
    from numrnn.tasks.classify import Classifier
    from numrnn.tasks.translate import Translator

    tokens, targets = rng.integers(0, 7, (5, 4)), rng.integers(0, 7, (5, 4))
    lengths = np.array([5, 4, 2, 1])
    padded = targets.copy()
    padded[np.arange(5)[:, None] >= lengths[None, :]] = -1
    labels = np.array([0, 2, 1, 2])
    source = rng.integers(0, 7, (6, 4))
    decoder_in = rng.integers(0, 9, (4, 4))
    decoder_out = rng.integers(0, 8, (4, 4))
    cases = [
        ("lm", Model, dict(cell="lstm", layers=2, embed=3), lambda m: m.loss_and_grad(tokens, targets)),
        (
            "classify",
            Classifier,
            dict(cell="gru", layers=1, embed=0, output_size=3, bidirectional=True),
            lambda m: m.loss_and_grad(tokens, labels, lengths),
        ),
        (
            "generate",
            Model,
            dict(cell="rnn", layers=1, embed=3, condition="both", condition_classes=3),
            lambda m: m.loss_and_grad(tokens, padded, labels=labels, lengths=lengths),
        ),
        (
            "translate",
            Translator,
            dict(cell="gru", layers=1, embed=3, output_size=8, bidirectional=True, attention="additive"),
            lambda m: m.loss_and_grad(source, np.array([6, 5, 3, 1]), decoder_in, decoder_out),
        ),
    ]
    for name, network, options, step in cases:
        config = ModelConfig(vocab_size=7, hidden=5, **options)
        yield (
            name,
            (lambda kernels, network=network, config=config: network(config, np.float64, kernels=kernels)),
            step,
        )


def test_training_steps_on_the_cuda_kernels_give_the_cpu_losses(rng):
    """Every topology's network driven by the CUDA launchers (clipping and Adam included)
    takes the CPU's training steps: the same losses and weights after three updates, its
    arrays in (simulated) device memory throughout: a host array meeting them raises."""
    from numrnn.kernels import cuda
    from numrnn.optim import Optimizer

    for name, build, step in networks(rng):
        runs = []
        for kernels in (cpu, cuda):
            network = build(kernels)
            network.init_weights(np.random.default_rng(7))
            optimizer = Optimizer("adam", network.params.size, np.float64, kernels)
            losses = []
            for _ in range(3):
                losses.append(step(network).loss)
                kernels.clip_global_norm(network.grads, 0.5)
                optimizer.update(network.params, network.grads, 1e-2)
            if kernels is cuda:  # parameters, gradients and optimizer state in device memory
                arrays = [network.params, network.grads, *optimizer.state.values()]
                assert all(isinstance(a, cuda.xp.ndarray) for a in arrays), name
            runs.append((losses, kernels.to_host(network.params).copy()))
        (cpu_losses, cpu_params), (cuda_losses, cuda_params) = runs
        np.testing.assert_allclose(cuda_losses, cpu_losses, rtol=1e-12, err_msg=name)
        np.testing.assert_allclose(cuda_params, cpu_params, rtol=1e-10, atol=1e-12, err_msg=name)
        assert cpu_losses[2] < cpu_losses[0], name  # it trained


@pytest.mark.parametrize(
    ("cell", "layers", "embed"), [("lstm", 2, 3), ("gru", 1, 0), ("rnn", 2, 0), ("gru", 2, 4)]
)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_generation_launchers_match_cpu(cell, layers, embed, dtype, rng, monkeypatch):
    """Batch-1 generation on one block of threads (patched to 4: every loop strides) draws the
    CPU's tokens from the same uniforms, greedy, with temperature, top-k and top-p."""
    from numrnn.kernels import cuda
    from numrnn.model import Model, ModelConfig
    from numrnn.sampling import kernel_weights

    monkeypatch.setattr(cuda, "SAMPLER_THREADS", 4)
    config = ModelConfig(cell=cell, vocab_size=9, hidden=6, layers=layers, embed=embed)
    model = Model(config, dtype).init_weights(np.random.default_rng(3))
    model.params *= 2.0  # peakier distributions: fewer near-ties in the draws
    weights = kernel_weights(model)
    if embed == 4:  # the embedding read row by row (no lookup table)
        w = model.weights
        weights = (
            np.ascontiguousarray(w["embed.weight"]),
            (np.ascontiguousarray(w["rnn.weight_ih_l0"]),) + weights[1][1:],
        ) + weights[2:]
    code, G, K = cpu.CELL_CODES[cell], GATES_PER_CELL[cell] * 6, 9

    def state():
        return rng.uniform(-0.5, 0.5, (layers, 6)).astype(dtype), rng.uniform(-0.5, 0.5, (layers, 6)).astype(
            dtype
        )

    work = lambda: dict(xg=np.zeros((1, G), dtype), hw=np.zeros((1, G), dtype))  # noqa: E731
    draw = lambda: dict(probs=np.zeros(K, dtype), ranked=np.zeros(K, dtype))  # noqa: E731
    h, c = state()
    expected, got = run_both(
        "feed_tokens",
        dict(
            logits=np.zeros(K, dtype),
            h=h,
            c=c,
            tokens=np.array([1, 4, 2]),
            cell=code,
            weights=weights,
            **work(),
        ),
    )
    assert_same(expected, got, dtype, skip=("xg", "hw"))
    for temperature, top_k, top_p, greedy in [
        (1.0, 0, 1.0, False),
        (0.7, 3, 1.0, False),
        (1.3, 0, 0.8, False),
        (1.0, 0, 1.0, True),
    ]:
        h, c = state()
        args = dict(
            out=np.zeros(8, np.int64), logits=np.zeros(K, dtype), h=h, c=c, token=5, uniforms=rng.random(8),
            temperature=temperature, top_k=top_k, top_p=top_p, greedy=greedy, cell=code, weights=weights,
            **work(), **draw(),
        )  # fmt: skip
        expected, got = run_both("generate_tokens", args)
        np.testing.assert_array_equal(got["out"], expected["out"])
        assert_same(expected, got, dtype, skip=("xg", "hw", "probs", "ranked"))
        h0, c0 = state()
        args = dict(
            out=np.zeros((3, 6), np.int64), lengths=np.zeros(3, np.int64), logits=np.zeros(K, dtype),
            h=np.zeros_like(h0), c=np.zeros_like(c0), h0=h0, c0=c0, token=2, uniforms=rng.random((3, 6)),
            temperature=temperature, top_k=top_k, top_p=top_p, greedy=greedy, stop=3, cell=code,
            weights=weights, **work(), **draw(),
        )  # fmt: skip
        expected, got = run_both("generate_until", args)
        np.testing.assert_array_equal(got["lengths"], expected["lengths"])
        for s, n in enumerate(expected["lengths"]):
            np.testing.assert_array_equal(got["out"][s, :n], expected["out"][s, :n])


def test_every_training_command_on_the_cuda_backend_matches_the_cpu(tmp_path, monkeypatch):
    """`--device cuda` (the simulated GPU) trains each task through the CUDA kernels, with its
    evaluations and checkpoints, to the weights `--device cpu` reaches (float64)."""
    from click.testing import CliRunner

    from numrnn.checkpoint import load_checkpoint
    from numrnn_cli import cli

    monkeypatch.setattr("numrnn.kernels.cuda.THREADS", (4, 8))
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog. " * 12, encoding="utf-8")
    names = tmp_path / "names"
    names.mkdir()
    for label, words in {"A": ["anna", "abel", "ada", "alma"], "B": ["bob", "bea", "boris", "bram"]}.items():
        (names / f"{label}.txt").write_text("\n".join(words * 3) + "\n", encoding="utf-8")
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text(
        "".join(f"{w}\t{w[::-1]}\n" for w in "ant bee cat dog eel fox gnu hen owl pig".split() * 2)
    )
    small = [
        "--hidden",
        "6",
        "--dtype",
        "float64",
        "--max-steps",
        "4",
        "--eval-every",
        "2",
        "--log-every",
        "2",
    ]
    commands = {
        "lm": ["train", str(corpus), "--seq-len", "8", "--batch-size", "4", "--layers", "2", "--embed", "4"],
        "classify": ["classify", "train", str(names), "--batch-size", "4", "--bidirectional"],
        "generate": ["generate", "train", str(names), "--batch-size", "4", "--cell", "gru", "--embed", "3"],
        "translate": [
            "translate",
            "train",
            str(pairs),
            "--batch-size",
            "4",
            "--embed",
            "3",
            "--val-frac",
            "0.2",
        ],
    }
    runner = CliRunner()
    for name, command in commands.items():
        outputs = {}
        for device in ("cpu", "cuda"):
            out = tmp_path / f"{name}-{device}.safetensors"
            result = runner.invoke(cli, [*command, *small, "--device", device, "-o", str(out)])
            assert result.exit_code == 0, (name, device, result.output)
            outputs[device] = load_checkpoint(out)
        for tensor, value in outputs["cpu"].weights.items():
            np.testing.assert_allclose(
                outputs["cuda"].weights[tensor], value, rtol=1e-9, atol=1e-12, err_msg=f"{name} {tensor}"
            )
        progress = [outputs[device].meta["progress"] for device in ("cpu", "cuda")]
        assert progress[0]["best_val_loss"] == pytest.approx(progress[1]["best_val_loss"], rel=1e-10), name
    # The commands that use a trained model print the same on either device.
    uses = {
        "lm": [(["sample"], ["--length", "40", "--seed", "3", "--prime", "the "]), (["eval"], [str(corpus)])],
        "classify": [
            (["classify", "predict"], ["anna", "boris"]),
            (["classify", "eval"], [str(names), "--json"]),
        ],
        "generate": [(["generate", "sample"], ["--label", "B", "-n", "4", "--seed", "2", "--top-k", "3"])],
        "translate": [
            (["translate", "run"], ["cat", "owl", "--beam", "3", "--n-best", "2"]),
            (["translate", "run"], ["--greedy", "pig"]),
        ],
    }
    for name, calls in uses.items():
        for command, arguments in calls:
            printed = {}
            for device in ("cpu", "cuda"):
                checkpoint = str(tmp_path / f"{name}-{device}.safetensors")
                result = runner.invoke(cli, [*command, "-c", checkpoint, *arguments, "--device", device])
                assert result.exit_code == 0, (command, device, result.output)
                printed[device] = result.stdout.replace(checkpoint, "CKPT")
            assert printed["cuda"] == printed["cpu"], (command, arguments)
    # A checkpoint moves between devices: each device's run resumes on the other (optimizer
    # state, carried state and generator included) to the same weights.
    resumed = {}
    for trained, device in (("cpu", "cuda"), ("cuda", "cpu")):
        checkpoint = tmp_path / f"lm-{trained}.safetensors"
        out = tmp_path / f"lm-{trained}-on-{device}.safetensors"
        arguments = [
            *commands["lm"],
            *small[:-6],
            "--max-steps",
            "6",
            "--eval-every",
            "3",
            "--log-every",
            "3",
        ]
        result = runner.invoke(
            cli, [*arguments, "--resume", str(checkpoint), "--device", device, "-o", str(out)]
        )
        assert result.exit_code == 0, (trained, device, result.output)
        resumed[device] = load_checkpoint(out)
        assert resumed[device].meta["progress"]["step"] == 6
    for tensor, value in resumed["cpu"].weights.items():
        np.testing.assert_allclose(
            resumed["cuda"].weights[tensor], value, rtol=1e-9, atol=1e-12, err_msg=tensor
        )
