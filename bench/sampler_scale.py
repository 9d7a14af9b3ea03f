"""How long a full recompute of the recommendation queue takes on large pools, and how much memory.

    .venv/bin/python bench/sampler_scale.py [--sizes 100000 1000000] [--labels 77] [--queue 500]

Times `labeling.sampling.rank_pool` alone (margin scores + rare-class boost + k-means diversity +
evaluation share) on a synthetic pool of N x 384 float32 unit vectors with k labels; writing the
queue to the database is done elsewhere (labeling services) and is NOT included here. Each size runs
in a fresh subprocess; its peak RSS (VmHWM, reset once the pool is generated so the generator's
temporaries do not count) includes the pool itself (vectors N x 384 float32 + probabilities N x k
float32, 1.84 GB at 1M x 77) plus everything the ranking allocates.

Data is random but shaped like real pools: vectors drawn around 4 x k topic centres with
per-topic spread (so k-means has structure to find and margins vary), probabilities a tempered
softmax of cosine to the k class centres, labeled counts long-tailed with some classes at 0.

Measured per size: warm ranking (labels exist) with max_threads=1 and 2, cold start (no labels),
and warm ranking while another process keeps one core busy; at the largest size also with the
vectors in float16 (as stored; rank_pool accepts them), which halves the pool's memory. Targets: <= 5 s at 100k, <= 30 s at
1M, peak RSS <= 2 GB at 1M. Writes bench/results/sampler_scale.json.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DIM = 384
CHUNK = 50_000


def synthetic_pool(n: int, k: int, seed: int = 0, vector_dtype=np.float32):
    rng = np.random.default_rng(seed)
    class_centres = rng.normal(size=(k, DIM)).astype(np.float32)
    class_centres /= np.linalg.norm(class_centres, axis=1, keepdims=True)
    # Several topics per class, each a noisy copy of its class centre, with its own spread.
    topic_class = np.repeat(np.arange(k), 4)
    topic_centres = class_centres[topic_class] + 0.6 * rng.normal(size=(len(topic_class), DIM)).astype(np.float32) / np.sqrt(DIM)
    topic_spread = rng.uniform(0.8, 1.6, size=len(topic_class)).astype(np.float32)
    topic_weight = rng.dirichlet(np.full(len(topic_class), 0.7))
    vectors = np.empty((n, DIM), dtype=vector_dtype)
    proba = np.empty((n, k), dtype=np.float32)
    for start in range(0, n, CHUNK):
        m = min(CHUNK, n - start)
        topics = rng.choice(len(topic_class), size=m, p=topic_weight)
        block = topic_centres[topics] + (topic_spread[topics, None] / np.sqrt(DIM)) * rng.standard_normal((m, DIM), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        vectors[start:start + m] = block
        logits = (block @ class_centres.T) / 0.05
        logits -= logits.max(axis=1, keepdims=True)
        np.exp(logits, out=logits)
        proba[start:start + m] = logits / logits.sum(axis=1, keepdims=True)
    counts = np.floor(rng.pareto(1.2, size=k) * 8).astype(np.int64)
    counts[rng.choice(k, size=max(1, k // 10), replace=False)] = 0
    return vectors, proba, counts


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(field)


def _reset_peak_rss() -> None:
    # Writing 5 to clear_refs resets VmHWM (the peak RSS) to the current RSS (Linux >= 4.0), so the peak
    # measured afterwards is the ranking's, not the data generator's temporaries.
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def measure_one_size(n: int, k: int, queue: int, vector_dtype: str = "float32") -> dict:
    """Runs in a fresh subprocess: one pool size, every scenario."""
    from labeling.sampling import rank_pool

    started = time.perf_counter()
    vectors, proba, counts = synthetic_pool(n, k, vector_dtype=np.dtype(vector_dtype))
    generate_seconds = time.perf_counter() - started
    rss_after_data = _status_mb("VmRSS")
    _reset_peak_rss()

    def timed(**kwargs) -> tuple[float, list]:
        t = time.perf_counter()
        recs = rank_pool(proba=proba, vectors=vectors, queue_size=queue, seed=1, **kwargs)
        return time.perf_counter() - t, recs

    result = {"n": n, "labels": k, "queue_size": queue, "vector_dtype": vector_dtype, "generate_seconds": round(generate_seconds, 1),
              "rss_mb_with_pool_loaded": round(rss_after_data)}
    timed(labeled_counts=counts, max_threads=1)  # warm-up: imports, first BLAS/OpenMP calls
    for threads in (1, 2):
        runs = [timed(labeled_counts=counts, max_threads=threads)[0] for _ in range(2)]
        result[f"warm_seconds_threads{threads}"] = round(min(runs), 2)
    seconds, recs = timed(labeled_counts=np.zeros(k, dtype=np.int64), max_threads=1)
    result["cold_start_seconds_threads1"] = round(seconds, 2)
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        result["warm_seconds_threads1_one_core_busy"] = round(timed(labeled_counts=counts, max_threads=1)[0], 2)
        result["warm_seconds_threads2_one_core_busy"] = round(timed(labeled_counts=counts, max_threads=2)[0], 2)
    finally:
        busy.kill()
        busy.wait()
    _, recs = timed(labeled_counts=counts, max_threads=1)
    result["queue_reasons"] = {r: sum(1 for x in recs if x.reason == r) for r in ("uncertain", "diverse", "rare-class", "evaluation")}
    result["peak_rss_mb"] = round(_status_mb("VmHWM"))  # pool + ranking, since the reset above
    return result


def _child(n, k, queue, vector_dtype, conn):
    conn.send(measure_one_size(n, k, queue, vector_dtype))
    conn.close()


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--labels", type=int, default=77)
    parser.add_argument("--queue", type=int, default=500)
    args = parser.parse_args(argv)

    targets = {100_000: {"seconds": 5.0}, 1_000_000: {"seconds": 30.0, "peak_rss_mb": 2048}}
    results = []
    context = multiprocessing.get_context("spawn")
    # float32 vectors as the product loads them; float16 as they are stored (half the memory), at the largest size.
    runs = [(n, "float32") for n in args.sizes] + [(max(args.sizes), "float16")]
    for n, vector_dtype in runs:
        parent, child = context.Pipe()
        process = context.Process(target=_child, args=(n, args.labels, args.queue, vector_dtype, child))
        process.start()
        row = parent.recv()
        process.join()
        target = targets.get(n, {})
        row["target"] = target
        worst = max(row["warm_seconds_threads1"], row["cold_start_seconds_threads1"],
                    row["warm_seconds_threads1_one_core_busy"])
        row["meets_target"] = bool(worst <= target.get("seconds", float("inf"))
                                   and row["peak_rss_mb"] <= target.get("peak_rss_mb", float("inf")))
        results.append(row)
        print(f"{n:>9,} x {DIM} {vector_dtype} x {args.labels} labels: warm {row['warm_seconds_threads1']} s (1 thread), "
              f"{row['warm_seconds_threads2']} s (2 threads); cold start {row['cold_start_seconds_threads1']} s; "
              f"one core busy: {row['warm_seconds_threads1_one_core_busy']} s (1 thread), "
              f"{row['warm_seconds_threads2_one_core_busy']} s (2 threads); peak RSS {row['peak_rss_mb']} MB "
              f"(pool loaded: {row['rss_mb_with_pool_loaded']} MB); target {target} -> {'met' if row['meets_target'] else 'MISSED'}",
              flush=True)
    out = {"what": "labeling.sampling.rank_pool full recompute (score + boost + diversity + evaluation share); "
                   "DB write of the queue not included",
           "machine_cores": multiprocessing.cpu_count(), "results": results}
    path = ROOT / "bench" / "results" / "sampler_scale.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path.relative_to(ROOT)}")
    return out


if __name__ == "__main__":
    main()
