"""speed.py's sampling children: batch-1 generation of SAMPLE_LENGTH characters after a prime,
timed; numrnn's child on the CPU also measures the read bandwidth its weights' size allows.

numrnn samples through ``Sampler.generate`` (its compiled loop; on the GPU one block of threads,
the ids coming back to the host, which synchronises), from the float32 weights or, on the CPU,
from bf16 or int8 copies (``Sampler(weights=...)``, ``numrnn sample --weights``); PyTorch
samples its twin in a ``torch.no_grad()`` Python loop with ``torch.multinomial`` (on the GPU
the twin, the prime and the generator there, synchronised at the end of each generation).
"""

import time

from harness import peak_rss_mb, time_calls
from speed_ceilings import read_bandwidth
from speed_setup import (
    ARBITRARY_CHARS,
    PRIME_LENGTH,
    SAMPLE_LENGTH,
    SAMPLE_TEMPERATURE,
    STARTUP_SAMPLE_LENGTH,
    THREADS,
    build_numrnn_model,
    build_torch_model,
    load_ids,
    load_numrnn_backend,
    numrnn_about,
    sample_weight_bytes,
    torch_about,
)

MAX_SAMPLE_RUNS = 100


def sample_result(job, warm, timed, rss_base, about, extra=None):
    """One child's timings, ``about`` (its threads, or its GPU), its peak memory on the CPU only
    (host memory says nothing of a GPU's), and ``extra``."""
    result = dict(run_s=timed, warmup_s=warm, chars_per_run=SAMPLE_LENGTH, **about)
    if job.device == "cpu":
        result.update(rss_after_imports_mb=rss_base, rss_peak_mb=peak_rss_mb())
    return dict(result, **(extra or {}))


def child_numrnn_sample(job):
    import numpy as np

    from numrnn.data import Vocab
    from numrnn.sampling import SampleConfig, Sampler

    load_numrnn_backend(job.device)
    ids, _ = load_ids(job.corpus, job.seed)
    rss_base = peak_rss_mb()
    model = build_numrnn_model(job.row, job.seed, job.device)
    sampler = Sampler(model, Vocab(ARBITRARY_CHARS), weights=job.weights)
    prime = np.ascontiguousarray(ids[:PRIME_LENGTH])
    rng = np.random.default_rng(job.seed)

    def generate(length=SAMPLE_LENGTH):
        config = SampleConfig(length=length, temperature=SAMPLE_TEMPERATURE)
        text = "".join(sampler.generate(prime, config, rng))
        assert len(text) == length

    warm_started = time.perf_counter()
    generate(STARTUP_SAMPLE_LENGTH)  # loads the kernels
    first = time.perf_counter() - warm_started
    warm, timed = time_calls(
        generate, warmup=1, min_calls=job.runs, min_seconds=job.min_seconds, max_calls=MAX_SAMPLE_RUNS
    )
    about, warm = dict(numrnn_about(job.device), weights=job.weights), [first, *warm]
    # The host's read bandwidth does not bound a GPU's step; the ceiling is float32's, one a row.
    if job.device != "cpu" or job.weights != "float32":
        return sample_result(job, warm, timed, rss_base, about)
    bandwidth = read_bandwidth(sample_weight_bytes(job.row), min(job.min_seconds, 0.25))
    return sample_result(job, warm, timed, rss_base, about, dict(bandwidth=bandwidth))


def torch_generate(torch, model, prime, length, generator):
    """Batch-1 sampling in a Python loop: feed the prime, then draw and feed back one id at a
    time (softmax at the temperature, torch.multinomial)."""
    with torch.no_grad():
        _, state = model(prime[:-1].view(-1, 1), None)
        token = prime[-1].view(1, 1)
        ids = []
        for _ in range(length):
            logits, state = model(token, state)
            probs = torch.softmax(logits[0, 0] / SAMPLE_TEMPERATURE, dim=-1)
            token = torch.multinomial(probs, 1, generator=generator).view(1, 1)
            ids.append(int(token))
    return ids


def child_torch_sample(job):
    import torch

    torch.set_num_threads(THREADS)
    ids, _ = load_ids(job.corpus, job.seed)
    rss_base = peak_rss_mb()
    torch.manual_seed(job.seed)
    model = build_torch_model(job.row, job.device).eval()
    prime = torch.from_numpy(ids[:PRIME_LENGTH].copy()).to(job.device)
    # torch.multinomial draws with a generator of its tensors' device.
    generator = torch.Generator(device=job.device).manual_seed(job.seed)

    def generate(length=SAMPLE_LENGTH):
        assert len(torch_generate(torch, model, prime, length, generator)) == length
        if job.device != "cpu":
            torch.cuda.synchronize()  # int(token) already waits each step; nothing left queued

    warm, timed = time_calls(
        generate, warmup=1, min_calls=job.runs, min_seconds=job.min_seconds, max_calls=MAX_SAMPLE_RUNS
    )
    return sample_result(job, warm, timed, rss_base, torch_about(torch, job.device))
