"""Near-duplicate groups (labeling/duplicates.py): what they look like on Banking77, and what they cost.

1. Banking77 train (10,003 texts, project embedder): groups at thresholds 0.90 / 0.95 / 0.98, their sizes, and
   how many mix Banking77 labels (a group a lead labels at once should not); time of the exact search.
2. The approximate (inverted-file) search forced on the same data: share of the exact groups it finds.
3. Time at scale on synthetic vectors (Banking77 vectors plus noise): the exact search at 50,000 rows (its
   limit) and the approximate one at 200,000.
Prints its figures and writes bench/results/duplicates.json.

    .venv/bin/python bench/duplicates.py [--scale 50000 200000]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LABELF_EMBEDDER_THREADS", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from bench.embedding_cache import cached_vectors, pick_embedder, read_labeled_csv  # noqa: E402
from labeling.duplicates import EXACT_MAX_ROWS, find_duplicate_groups, text_key  # noqa: E402

DATA_DIR = Path(os.environ.get("BANKING77_DIR", ROOT.parent / "shared" / "data" / "banking77"))
RESULTS = ROOT / "bench" / "results" / "duplicates.json"


def timed(**kwargs):
    started = time.perf_counter()
    result = find_duplicate_groups(**kwargs)
    return result, round(time.perf_counter() - started, 2)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=int, nargs="*", default=[50_000, 200_000])
    args = parser.parse_args()
    texts, categories = read_labeled_csv(DATA_DIR / "train.csv")
    embed, embedder = pick_embedder()
    vectors = cached_vectors(embed, embedder, "banking77_train", texts)
    keys = np.array([text_key(text) for text in texts], dtype=np.int64)
    results: dict = {"dataset": f"Banking77 train ({len(texts)} texts)", "embedder": embedder,
                     "machine": f"{os.cpu_count()} cores, {platform.machine()}, shared with other processes",
                     "thresholds": {}, "scale": {}}

    for threshold in (0.90, 0.95, 0.98):
        found, seconds = timed(vectors=vectors, text_keys=keys, threshold=threshold)
        sizes = [len(group) for group in found.groups]
        mixed = sum(1 for group in found.groups if len({categories[i] for i in group}) > 1)
        row = {"groups": len(sizes), "duplicate_records": found.duplicate_rows, "largest": sizes[:5],
               "size_counts": dict(sorted(Counter(sizes).items())[:6]), "groups_mixing_labels": mixed,
               "share_mixing_labels": round(mixed / max(1, len(sizes)), 4), "seconds": seconds, "method": found.method,
               "examples": [[texts[i] for i in group[:3]] for group in found.groups[:3]]}
        results["thresholds"][str(threshold)] = row
        print(f"threshold {threshold}: {row['groups']} groups, {row['duplicate_records']} duplicate records, largest "
              f"{row['largest']}, {mixed} groups mix labels ({row['share_mixing_labels']:.1%}); {seconds} s", flush=True)

    exact, _ = timed(vectors=vectors, text_keys=keys)
    approximate, seconds = timed(vectors=vectors, text_keys=keys, exact_max_rows=1000)
    exact_groups = {frozenset(group.tolist()) for group in exact.groups}
    found_groups = {frozenset(group.tolist()) for group in approximate.groups}
    results["approximate_vs_exact_at_0.95"] = {
        "exact_groups": len(exact_groups), "approximate_groups": len(found_groups),
        "identical_groups": len(exact_groups & found_groups),
        "share_identical": round(len(exact_groups & found_groups) / max(1, len(exact_groups)), 4), "seconds": seconds}
    print("approximate search forced on Banking77:", results["approximate_vs_exact_at_0.95"], flush=True)

    rng = np.random.default_rng(0)
    for n in args.scale:
        synthetic = vectors[rng.integers(0, len(vectors), n)] + rng.normal(size=(n, vectors.shape[1])).astype(np.float32) * 0.03
        synthetic /= np.linalg.norm(synthetic, axis=1, keepdims=True)
        found, seconds = timed(vectors=synthetic, exact_max_rows=EXACT_MAX_ROWS)
        results["scale"][str(n)] = {"method": found.method, "seconds": seconds, "groups": len(found.groups)}
        print(f"{n} rows: {found.method} search {seconds} s", flush=True)

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
