"""From speed.py's raw child results to what it prints: medians per side, ratios, GFLOP/s and
shares of the machine's ceilings, judged against the targets, as tables, a header and notes;
for a --device cuda run the GPU's table (speeds, ratios, losses: no CPU ceilings or targets).
"""

import math
from dataclasses import asdict

from harness import median, ratio
from machine import BUSY_LOAD
from speed_ceilings import GEMM_N
from speed_load import load_notes, load_sample_table, load_table
from speed_setup import (
    GRAD_CLIP,
    LR,
    SAMPLE_LENGTH,
    SAMPLE_TEMPERATURE,
    STARTUP_SAMPLE_LENGTH,
    THREADS,
    Row,
    sample_weight_bytes,
    step_product_flops,
    train_flops,
)
from tables import print_table

# numrnn / PyTorch chars/s ratios to reach; shares of the GEMM peak and of the bandwidth ceiling.
TRAIN_TARGETS = {
    ("A", "rnn"): 10.0,
    ("B", "rnn"): 2.5,
    ("B", "gru"): 2.5,
    ("B", "lstm"): 1.5,
    ("C", "rnn"): 1.4,
    ("C", "gru"): 1.4,
    ("C", "lstm"): 1.2,
    ("D", "lstm"): 1.2,
}
SAMPLE_TARGETS = {"A": 20.0, "B": 20.0, "C": 20.0, "D": 10.0}
# numrnn's sampling from bf16 / int8 weights against its own from float32 (chars/s ratios).
PACKED_SAMPLE_TARGETS = {"C": {"bf16": 1.8, "int8": 3.0}, "D": {"bf16": 1.8, "int8": 3.0}}
PACKED_WEIGHTS = ("bf16", "int8")
GEMM_SHARE_TARGET = {"C": 0.65, "D": 0.65}
BANDWIDTH_SHARE_TARGET = {"C": 0.60, "D": 0.60}
STARTUP_TARGETS = {"help": 0.3, "sample": 0.5}  # warm wall seconds (issue 12: sample 0.5)


def pooled(results, key):
    return [value for r in results if "error" not in r for value in r[key]]


def good(results):
    return [r for r in results if "error" not in r]


def warmup_overhead(result):
    """What the warm-up steps took beyond as many steady steps: kernel loading, first touches,
    oneDNN primitive creation."""
    excess = sum(result["warmup_s"]) - len(result["warmup_s"]) * median(result["step_s"])
    return max(excess, 0.0)


def summarise_side(results, task, row):
    """Medians over every timed step (or generation) of every repeat of one side and task."""
    ok = good(results)
    if not ok:
        errors = [r["error"] for r in results]
        return dict(chars_per_s=float("nan"), errors=errors) if errors else None
    if task == "train":
        step = median(pooled(ok, "step_s"))
        summary = dict(
            chars_per_s=row.chars_per_step / step,
            median_step_s=step,
            timed_steps=len(pooled(ok, "step_s")),
            warmup_s=median([sum(r["warmup_s"]) for r in ok]),
            warmup_overhead_s=median([warmup_overhead(r) for r in ok]),
        )
        if "rss_growth_mb" in ok[0]:  # the CPU's children only: host memory says nothing of a GPU's
            summary.update(
                rss_growth_mb=median([r["rss_growth_mb"] for r in ok]),
                rss_peak_mb=median([r["rss_peak_mb"] for r in ok]),
            )
        summary.update(
            per_repeat_chars_per_s=[row.chars_per_step / median(r["step_s"]) for r in ok],
            data=ok[0]["data"],
        )
        products = [r["products_s"] for r in ok if "products_s" in r]  # numrnn's CPU children
        if products:
            summary.update(products_s=median(products), per_repeat_products_s=products)
    else:
        run = median(pooled(ok, "run_s"))
        summary = dict(
            chars_per_s=SAMPLE_LENGTH / run,
            median_run_s=run,
            timed_runs=len(pooled(ok, "run_s")),
            per_repeat_chars_per_s=[SAMPLE_LENGTH / median(r["run_s"]) for r in ok],
        )
        if "bandwidth" in ok[0]:
            summary.update(
                read_bytes_per_s=median([r["bandwidth"]["bytes_per_s"] for r in ok]),
                threaded_read_bytes_per_s=median([r["bandwidth"]["threaded_bytes_per_s"] for r in ok]),
            )
    summary["errors"] = [r["error"] for r in results if "error" in r]
    return summary


def step_bound_share(row, step_gflops, gemm_peak, products_seconds=None):
    """The largest share of the GEMM peak a training step of ``row`` can run at when its
    gate loops, loss and optimizer take no time at all: all its products ``products_seconds``
    (measured in numrnn's training child: speed_ceilings.product_seconds), or, where that is
    missing (runs before 2026-12-03 20:30), its per-time-step products at ``step_gflops``
    (measured) and its other products at the peak itself. A target that needs more is beyond
    these products."""
    if products_seconds is not None:
        return train_flops(row) / products_seconds / (gemm_peak * 1e9)
    small = step_product_flops(row) / train_flops(row)
    return 1.0 / (small * gemm_peak / step_gflops + (1.0 - small))


def summarise_row(row, runs, compile_times, gemm_peak, device="cpu", step_products=None):
    """One row's sides, ratios and shares. On the GPU (no gemm_peak) no share of the CPU's peak
    and no targets: they are the CPU's. step_products: {row name: GFLOP/s of its per-step
    products} (measure_step_products); with the training children's "products_s", the share
    of the peak the products allow a step."""
    sides = {kind: summarise_side(results, kind.split("-")[1], row) for kind, results in runs.items()}
    get = lambda kind: (sides.get(kind) or {}).get("chars_per_s", float("nan"))  # noqa: E731
    cpu = device == "cpu"
    summary = dict(
        row=asdict(row),
        sides=sides,
        runs=runs,
        compile=compile_times.get(row.name),
        train_ratio=ratio(get("numrnn-train"), get("torch-train")),
        sample_ratio=ratio(get("numrnn-sample"), get("torch-sample")),
        train_target=TRAIN_TARGETS.get((row.config, row.cell)) if cpu else None,
        sample_target=SAMPLE_TARGETS.get(row.config) if cpu else None,
        train_flops=train_flops(row),
        sample_weight_bytes=sample_weight_bytes(row),
    )
    numrnn_train = sides.get("numrnn-train") or {}
    if "median_step_s" in numrnn_train:
        gflops = train_flops(row) / numrnn_train["median_step_s"] / 1e9
        summary.update(gflops=gflops)
        if gemm_peak is not None:
            summary.update(gemm_share=ratio(gflops, gemm_peak))
    if summary["train_target"] is not None and gemm_peak is not None:
        # The share of the GEMM peak numrnn's step would need to run at target x PyTorch's
        # speed (the same FLOPs a character): above 100%, beyond what OpenBLAS's kernels in
        # use reach on this machine at large products (the header names them).
        target_rate = summary["train_target"] * get("torch-train")
        summary.update(
            target_gemm_share=ratio(target_rate * train_flops(row) / row.chars_per_step / 1e9, gemm_peak)
        )
    step_gflops = (step_products or {}).get(row.name)
    products_seconds = (sides.get("numrnn-train") or {}).get("products_s")  # the side keeps it
    if step_gflops and gemm_peak:
        summary.update(
            step_product_gflops=step_gflops,
            step_bound_share=step_bound_share(row, step_gflops, gemm_peak, products_seconds),
        )
    for weights in PACKED_WEIGHTS:
        if f"numrnn-sample-{weights}" in sides:
            summary[f"sample_{weights}_speedup"] = ratio(
                get(f"numrnn-sample-{weights}"), get("numrnn-sample")
            )
    numrnn_sample = sides.get("numrnn-sample") or {}
    if "read_bytes_per_s" in numrnn_sample:
        ceiling = numrnn_sample["read_bytes_per_s"] / sample_weight_bytes(row)
        summary.update(
            bandwidth_ceiling_chars_per_s=ceiling,
            bandwidth_ceiling_threads_chars_per_s=(
                numrnn_sample["threaded_read_bytes_per_s"] / sample_weight_bytes(row)
            ),
            bandwidth_share=numrnn_sample["chars_per_s"] / ceiling,
        )
    return summary


def fmt_rate(value):
    return "-" if value is None or math.isnan(value) else f"{value:,.0f}"


def fmt_ratio(value):
    return "-" if value is None or math.isnan(value) else f"{value:.2f}"


def fmt_gflops(value):
    return "-" if value is None or math.isnan(value) else f"{value:.1f}"


def verdict(value, target):
    """'>=2.5 ok' / '>=2.5 miss'; '-' without a target or a value."""
    if target is None:
        return "-"
    shown = f">={target:g}"
    if value is None or math.isnan(value):
        return shown
    return f"{shown} {'ok' if value >= target else 'miss'}"


def fmt_bound(summary):
    """The share of the peak the per-step products allow; "beyond" where the target needs more."""
    bound = summary.get("step_bound_share")
    if bound is None:
        return "-"
    needs = summary.get("target_gemm_share")
    return f"{bound:.0%}" + (" beyond" if needs is not None and needs > bound else "")


def fmt_share(value, target):
    if value is None or math.isnan(value):
        return "-"
    mark = "" if target is None else (" ok" if value >= target else " miss")
    return f"{value:.0%}{mark}"


def fmt_ceilings(summary):
    one = summary.get("bandwidth_ceiling_chars_per_s")
    if one is None:
        return "-"
    return f"{fmt_rate(one)} / {fmt_rate(summary['bandwidth_ceiling_threads_chars_per_s'])}"


def fmt_memory(summary, key):
    parts = []
    for kind in ("numrnn-train", "torch-train"):
        side = summary["sides"].get(kind)
        parts.append("-" if not side or key not in side else f"{side[key]:.0f}")
    text = " / ".join(parts)
    if key == "rss_growth_mb" and "-" not in parts:
        text += " ok" if float(parts[0]) <= float(parts[1]) else " miss"
    return text


def fmt_compile(summary):
    times = summary["compile"]
    return "-" if not times else f"{times['train_s'] + times['sample_s']:.1f}"


def fmt_warmup(summary):
    parts = []
    for kind in ("numrnn-train", "torch-train"):
        side = summary["sides"].get(kind)
        parts.append(
            "-" if not side or "warmup_overhead_s" not in side else f"{side['warmup_overhead_s']:.2f}"
        )
    return " / ".join(parts)


def fmt_losses(summary, kind):
    """'first -> last' training loss of one side, medians over its repeats (each repeat starts
    from the same weights and batches): a check that each side's step on the GPU trains."""
    ok = good(summary["runs"].get(kind) or [])
    if not ok:
        return "-"
    first, last = (median([r[key] for r in ok]) for key in ("first_loss", "last_loss"))
    return f"{first:.3f} -> {last:.3f}"


COLUMNS = [
    "model",
    "train c/s\nnumrnn",
    "train c/s\nPyTorch",
    "train\nratio",
    "train\ntarget",
    "sample c/s\nnumrnn",
    "sample c/s\nPyTorch",
    "sample\nratio",
    "sample\ntarget",
    "numrnn\nGFLOP/s",
    "% GEMM\npeak",
    "target\nneeds",
    "step\nallows",
    f"bw ceiling c/s\n1 / {THREADS} threads",
    "share of\n1-thr. ceil.",
    "mem MB after\nimports nr/pt",
    "peak RSS MB\nnr / pt",
    "compile s\n(cold)",
    "warm-up +s\nnr / pt",
]


def speed_cells(summary, targets):
    """Each task's numrnn and PyTorch chars/s and their ratio (then the target's verdict)."""
    cells = []
    for task in ("train", "sample"):
        rates = [
            (summary["sides"].get(f"{side}-{task}") or {}).get("chars_per_s") for side in ("numrnn", "torch")
        ]
        cells += [*map(fmt_rate, rates), fmt_ratio(summary[f"{task}_ratio"])]
        if targets:
            cells.append(verdict(summary[f"{task}_ratio"], summary[f"{task}_target"]))
    return cells


def table_row(summary):
    row = Row(**summary["row"])
    return [
        row.name,
        *speed_cells(summary, targets=True),
        fmt_gflops(summary.get("gflops")),
        fmt_share(summary.get("gemm_share"), GEMM_SHARE_TARGET.get(row.config)),
        fmt_share(summary.get("target_gemm_share"), None),
        fmt_bound(summary),
        fmt_ceilings(summary),
        fmt_share(summary.get("bandwidth_share"), BANDWIDTH_SHARE_TARGET.get(row.config)),
        fmt_memory(summary, "rss_growth_mb"),
        fmt_memory(summary, "rss_peak_mb"),
        fmt_compile(summary),
        fmt_warmup(summary),
    ]


PACKED_COLUMNS = [
    "model",
    "float32 c/s",
    *(f"{weights} {what}" for weights in PACKED_WEIGHTS for what in ("c/s", "x float32", "target")),
]


def packed_rows(report):
    """numrnn's batch-1 sampling from bf16 and int8 weights against its float32 sampling."""
    rows = []
    for summary in report["rows"]:
        sides = summary["sides"]
        if not any(f"numrnn-sample-{weights}" in sides for weights in PACKED_WEIGHTS):
            continue
        row = Row(**summary["row"])
        rates = {kind: side.get("chars_per_s") for kind, side in sides.items() if side}
        cells = [row.name, fmt_rate(rates.get("numrnn-sample"))]
        for weights in PACKED_WEIGHTS:
            speedup = summary.get(f"sample_{weights}_speedup", float("nan"))
            target = PACKED_SAMPLE_TARGETS.get(row.config, {}).get(weights)
            cells += [
                fmt_rate(rates.get(f"numrnn-sample-{weights}")),
                fmt_ratio(speedup),
                verdict(speedup, target),
            ]
        rows.append(cells)
    return rows


# The GPU's table: the CPU's without its ceilings, memory and targets (see gpu_notes), with the
# losses of both sides.
CUDA_COLUMNS = [
    "model",
    "train c/s\nnumrnn",
    "train c/s\nPyTorch",
    "train\nratio",
    "sample c/s\nnumrnn",
    "sample c/s\nPyTorch",
    "sample\nratio",
    "numrnn\nGFLOP/s",
    "train loss\nnumrnn",
    "train loss\nPyTorch",
    "compile s\n(cold)",
    "warm-up +s\nnr / pt",
]


def cuda_table_row(summary):
    row = Row(**summary["row"])
    return [
        row.name,
        *speed_cells(summary, targets=False),
        fmt_gflops(summary.get("gflops")),
        fmt_losses(summary, "numrnn-train"),
        fmt_losses(summary, "torch-train"),
        fmt_compile(summary),
        fmt_warmup(summary),
    ]


STARTUP_COLUMNS = ["command", "cold s", "warm s", "warm target", "ok"]


def startup_notes(startup):
    """How much of a warm ``numrnn sample`` numba's floor with BLAS takes (none when either
    failed or was not run)."""
    sample, floor = (startup or {}).get("sample") or {}, (startup or {}).get("floor-blas") or {}
    if "warm_s" not in sample or "warm_s" not in floor:
        return []
    sample_s, floor_s = sample["warm_s"], floor["warm_s"]
    own = (
        "numrnn's own part (its kernels from the cache, the checkpoint, the CLI, "
        f"{STARTUP_SAMPLE_LENGTH} characters)"
    )
    if floor_s > sample_s:  # timed in other processes: their spread can exceed numrnn's part
        return [
            f"start-up: numba's floor with BLAS took {floor_s:.2f} s, more than numrnn sample's "
            f"{sample_s:.2f} s warm: in this run the floor's own spread is larger than {own}."
        ]
    return [
        f"start-up: numba's floor with BLAS takes {floor_s:.2f} s of numrnn sample's {sample_s:.2f} s "
        f"warm; {own} is the other {sample_s - floor_s:.2f} s."
    ]


def startup_rows(startup):
    labels = {
        "help": "numrnn --help",
        "sample": f"numrnn sample -c small.safetensors --length {STARTUP_SAMPLE_LENGTH}",
        "floor": "numba's floor: import numba, run one cached function",
        "floor-blas": "numba's floor with scipy's BLAS: the function an np.dot",
    }
    rows = []
    for name, label in labels.items():
        if name.startswith("floor") and name not in startup:
            continue  # a run from before the floor was measured
        result = startup.get(name) or dict(error=startup.get("error", "not run"))
        target = STARTUP_TARGETS.get(name)
        wanted = "-" if target is None else f"<={target:g}"
        if "error" in result:
            rows.append([label, "error", "-", wanted, "-"])
            continue
        ok = "-" if target is None else "ok" if result["warm_s"] <= target else "miss"
        rows.append([label, f"{result['cold_s']:.2f}", f"{result['warm_s']:.2f}", wanted, ok])
    return rows


def device_of(report):
    """The device the run measured ("cpu" when its settings name none, as a CPU run's do)."""
    return report["settings"].get("device", "cpu")


def gpu_names(report):
    """The GPUs the children reported, in the order first seen ("-" when none did)."""
    names = [
        result["gpu"]
        for row in report["rows"]
        for results in row["runs"].values()
        for result in results
        if "gpu" in result
    ]
    return ", ".join(dict.fromkeys(names)) or "-"


def numrnn_openblas_kernels(report):
    """The OpenBLAS kernels numrnn's training children ran on ("-" when none reported)."""
    found = {
        kernel
        for row in report["rows"]
        for result in row["runs"].get("numrnn-train", [])
        for kernel in (result.get("threads") or {}).get("openblas_kernels", {}).values()
    }
    return ", ".join(sorted(found)) or "-"


def header_lines(report):
    v, s, gemm = report["versions"], report["settings"], report["gemm"]
    peaks = ", ".join(f"{when} {g['gflops']:.0f}" for when, g in gemm.items() if "gflops" in g)
    loads = ", ".join(f"{when} {load:.2f}" for when, load in report["load"].items() if load is not None)
    torch_part = f"torch {v['torch']}" if v["torch"] else "torch not installed"
    data = next(
        (side["data"] for row in report["rows"] for side in row["sides"].values() if side and "data" in side),
        "-",
    )
    if device_of(report) == "cpu":
        machine = [
            f"{report['cpu']} | {report['cpus']} CPUs | load {loads} | {report['date']}",
            f"numrnn {v['numrnn']}, numba {v['numba']}, numpy {v['numpy']}, {torch_part} | "
            f"{THREADS} threads a side | float32 GEMM peak {report['gemm_peak']:.0f} GFLOP/s "
            f"({GEMM_N}^3 numpy matmul, {THREADS} threads; {peaks}) | numrnn's OpenBLAS kernels: "
            f"{numrnn_openblas_kernels(report)}",
        ]
    else:
        machine = [
            f"GPU: {gpu_names(report)} | host {report['cpu']}, {report['cpus']} CPUs | load {loads} | "
            f"{report['date']}",
            f"numrnn {v['numrnn']}, numba {v['numba']}, numba-cuda {v['numba-cuda']}, "
            f"CuPy {v['cupy'] or 'not installed'}, numpy {v['numpy']}, {torch_part} | "
            f"both sides on {device_of(report)}",
        ]
    return [
        *machine,
        f"{s['repeats']} repeat(s) x >= {s['steps']} timed steps (>= {s['min_seconds']:g} s) after "
        f"{s['warmup']} warm-up, >= {s['sample_runs']} sample run(s) of {SAMPLE_LENGTH:,} chars | "
        f"train data: {data} | Adam {LR:g}, clip {GRAD_CLIP:g}, temperature "
        f"{SAMPLE_TEMPERATURE:g}",
    ]


def gpu_notes():
    """What the GPU's table shows, how it was timed, and what it leaves out and why."""
    return [
        "train/sample c/s: chars per second, median over every timed step (generation) of every "
        "repeat; ratio = numrnn / PyTorch. numrnn: Model(device='cuda'), its product step and "
        "Sampler.generate on the GPU (the step's loss and the generated ids come back to the "
        "host, which waits for the GPU); PyTorch: the twin and every batch on cuda, "
        "torch.cuda.synchronize() at the end of each timed step and generation.",
        "GFLOP/s: 3 x the forward's dense matmul FLOPs (one-hot input of A counted as a lookup, "
        "0 FLOPs) / numrnn's median step. train loss: first -> last training loss, medians over "
        "the repeats (each side starts from the weights its CPU run starts from; numrnn's and "
        "PyTorch's initialisations differ).",
        "compile: first train step + first sample of a tiny model on the GPU: numba-cuda's JIT "
        "compilation, which has no disk cache, so every timed child compiles again in its warm-up "
        "steps, counted in warm-up +s (what they took beyond as many steady steps).",
        "left out on the GPU, as they describe the CPU: the float32 GEMM peak and numrnn's share "
        "of it, the read-bandwidth ceiling for sampling and numrnn's share of it, thread counts, "
        "peak RSS (host memory, not the GPU's), the start-up table (CLI start-up on the CPU), and "
        "the targets (the CPU's).",
    ]


def cpu_notes():
    """What the CPU's table shows and how it was measured."""
    return [
        "train/sample c/s: chars per second, median over every timed step (generation) of every "
        "repeat; ratio = numrnn / PyTorch; target = the issue's numrnn/PyTorch target.",
        "GFLOP/s: 3 x the forward's dense matmul FLOPs (one-hot input of A counted as a lookup, "
        "0 FLOPs) / numrnn's median step; % GEMM peak: of the peak above (target 65% at C, D); "
        "target needs: the share of that peak numrnn's step would run at if it trained at the "
        "target ratio times PyTorch's chars/s (the same FLOPs a character; above 100%, beyond "
        "the peak of the OpenBLAS kernels named above). step allows: the most a step can reach "
        "when all its products take the time they take alone and the rest (gate loops, loss, "
        "Adam) none: each layer's per-time-step products (h @ W_hh forward, dgates @ W_hh.T "
        "backward, B x H by H x G, on numrnn's packed panels and parts) and its other products "
        "(input projections, input and weight gradients, the head's), through numrnn's own "
        "calls on its threads, each timed at its best in numrnn's training child right after "
        "its steps, so at the same moment of a machine whose speed drifts within a run (line "
        "'per-step products': their rates measured at the start); 'beyond' where the target "
        "needs more, i.e. the target asks for faster products than numrnn's.",
        "bf16 / int8: numrnn's Sampler(weights=...) (numrnn sample --weights), each weight "
        "rounded to bfloat16 or to 8 bits with a scale per row, converted once before timing, "
        "the same prime, temperature and length; x float32 = its chars/s over numrnn's float32 "
        "sampling in the same run (targets: 1.8 and 3 at C, D).",
        "bandwidth ceiling: read bandwidth over a buffer the size of the weights one batch-1 step "
        "reads (1 thread: best of numpy sum, A @ x, x @ A; 2 threads: x @ A on halves at once; "
        "measured in the numrnn sampling child) / those bytes; share: numrnn's sample c/s of the "
        "1-thread ceiling (target 60% at C, D; at A and B the weights sit in a "
        "near cache where per-step overheads, not reading, bound a step, so the share there is "
        "only a reference and can pass 100%). numrnn samples with OPENBLAS_NUM_THREADS=1, as "
        "`numrnn sample` does; PyTorch with set_num_threads(2).",
        "mem: training child's peak RSS (ru_maxrss) minus its peak after imports + data "
        "(target: numrnn <= PyTorch), and the raw peak. compile: first train step + first sample "
        "of a tiny model with a cold kernel cache, new compilation only (rows share kernels, so "
        "later rows mostly load earlier rows' code). warm-up: what the timed training children's "
        "warm-up steps took beyond as many steady steps (kernel cache load, first touches).",
    ]


def notes(report):
    s = report["settings"]
    lines = list(s["notes"])
    lines += cpu_notes() if device_of(report) == "cpu" else gpu_notes()
    if s.get("kernel_cache_given") and device_of(report) == "cpu":  # the GPU's kernels have no cache
        lines.append(f"kernel cache: {s['kernel_cache']} (given; compile s may be a cache load).")
    for row in report["rows"]:
        for kind, side in row["sides"].items():
            if side and side.get("errors"):
                lines.append(f"{Row(**row['row']).name} {kind} failed: {side['errors'][0]}")
    forced = report.get("openblas_environment")
    if forced and device_of(report) == "cpu":
        setting = " ".join(f"{name}={value}" for name, value in forced.items())
        lines.append(
            f"note: {setting} is set here, which chooses OpenBLAS's kernels for numpy and for "
            "numba's products (Haswell: the AVX2 ones, about half the float32 throughput of the "
            "AVX-512 ones OpenBLAS picks itself on a CPU that has them); for the speed a user "
            "without it gets, run: env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python "
            "benchmarks/speed.py"
        )
    # The start only: by the end the 1-minute load counts this run's own two threads.
    load = report["load"]["start"]
    if load is not None and load > BUSY_LOAD:
        lines.append(
            f"note: the machine was busy (1-minute load {load:.2f}) when this started; "
            f"other work skews the speed columns of both sides."
        )
    if report.get("under_load") is not None:
        lines += load_notes(report["under_load"])
    lines += startup_notes(report.get("startup"))
    lines.append(f"wall time of this run: {report['wall_s']:.0f} s.")
    return lines


def print_report(report):
    """The header, the speed table, the start-up table (when run) and the notes, on stdout."""
    for line in header_lines(report):
        print(line)
    if device_of(report) == "cpu":
        columns, make_row = COLUMNS, table_row
        title = f"numrnn vs PyTorch: train and sample speed, float32, {THREADS} threads each"
    else:
        columns, make_row = CUDA_COLUMNS, cuda_table_row
        title = f"numrnn vs PyTorch on {device_of(report)}: train and sample speed, float32"
    print_table(columns, [make_row(summary) for summary in report["rows"]], title, width=230)
    packed = packed_rows(report) if device_of(report) == "cpu" else []
    if packed:
        print_table(
            PACKED_COLUMNS,
            packed,
            "numrnn sampling from bf16 and int8 weights (numrnn sample --weights), batch 1, "
            "against its float32",
            width=150,
        )
    if report.get("under_load") is not None:
        print_table(*load_table(report["under_load"]), width=120)
        if report["under_load"]["sample_sides"]:
            print_table(*load_sample_table(report["under_load"]), width=120)
    if report["startup"] is not None:
        print_table(
            STARTUP_COLUMNS,
            startup_rows(report["startup"]),
            "start-up (python -m numrnn_cli, and numba without numrnn; wall seconds, warm = median "
            "after the cold run)",
            width=110,
        )
    for line in notes(report):
        print(line)
