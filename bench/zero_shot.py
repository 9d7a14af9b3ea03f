"""Describe-and-classify (zero-shot) accuracy: the plain-cosine baseline against our method, on three datasets.

Banking77 (77 intents): pool = the train texts (unlabeled), measured on the test split (3,080 texts).
Support tickets (bench/data/support_tickets.csv, 259 short messages in 10 topics, written for this bench):
pool = the dataset itself, measured on the same texts (transductive, as the product does on its own records).
Debian sections (bench/data/debian_sections/, 2,979 one-line Debian package descriptions in 18 archive sections,
32:1 class imbalance; see bench/data/build_debian_sections.py): pool = the dataset itself, transductive as above.

For each dataset and for label names alone and with the one-line descriptions:
  baseline      cosine to the label name turned into a phrase (or to the description), softmax T=0.05
  no pool       our label vectors (name templates + description), no pool refinement
  method        the shipped build_zero_shot_head with the pool
It also sweeps the softmax temperature on the support tickets (the fixed temperature is justified there,
on a dataset other than Banking77) and times head creation for a 10k pool and a 1M-row float16 pool (subsampled).
Prints a table and writes bench/results/zero_shot.json.

    .venv/bin/python bench/zero_shot.py
    .venv/bin/python bench/zero_shot.py --train-split bench/data/banking77_descriptions.json   # for revising descriptions

Vectors come from the project's embedder (labeling.embeddings.embed_texts, int8 ONNX), or from
sentence-transformers if that cannot be used; the output says which. They are cached under bench/.cache/.
"""
from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from sklearn.metrics import f1_score  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from models_app.ml import zero_shot  # noqa: E402
from bench.embedding_cache import cached_vectors, pick_embedder, read_labeled_csv  # noqa: E402
from models_app.ml.calibration import expected_calibration_error  # noqa: E402

BANKING77_DIR = Path(os.environ.get("BANKING77_DIR", ROOT.parent / "shared" / "data" / "banking77"))
DATA = ROOT / "bench" / "data"
RESULTS = ROOT / "bench" / "results" / "zero_shot.json"
BASELINE_TEMPERATURE = 0.05
TEMPERATURE_SWEEP = (0.02, 0.03, 0.04, 0.05, 0.06, 0.08, 0.1)


def softmax(similarities: np.ndarray, temperature: float) -> np.ndarray:
    logits = similarities / temperature
    logits = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)


def metrics(labels: list[str], y: list[str], proba: np.ndarray) -> dict:
    index = {label: i for i, label in enumerate(labels)}
    y_index = np.array([index[label] for label in y])
    predicted = proba.argmax(axis=1)
    return {
        "accuracy": round(float(np.mean(predicted == y_index)), 4),
        "macro_f1": round(float(f1_score(y_index, predicted, average="macro", labels=range(len(labels)))), 4),
        "mean_confidence": round(float(proba.max(axis=1).mean()), 4),
        "ece": round(expected_calibration_error(y_index, proba), 4),
    }


def evaluate_dataset(name, *, labels, descriptions, embed, pool, vectors, y, other_descriptions=None) -> dict:
    """`other_descriptions`: further description sets, {variant name: descriptions}, measured beside the first."""
    results = {}
    variants = [("names", {}), ("descriptions", descriptions), *(other_descriptions or {}).items()]
    for variant, variant_descriptions in variants:
        baseline_texts = [(variant_descriptions.get(label) or "").strip() or zero_shot.label_phrase(label) for label in labels]
        baseline_vectors = np.asarray(embed(baseline_texts), dtype=np.float32)
        no_pool = zero_shot.build_zero_shot_head(labels=labels, descriptions=variant_descriptions, embed=embed)
        started = time.perf_counter()
        head = zero_shot.build_zero_shot_head(labels=labels, descriptions=variant_descriptions, embed=embed, pool_vectors=pool)
        build_seconds = time.perf_counter() - started
        results[variant] = {
            "baseline": metrics(labels, y, softmax(vectors @ baseline_vectors.T, BASELINE_TEMPERATURE)),
            "no_pool": metrics(labels, y, no_pool.predict_proba(vectors)),
            "method": metrics(labels, y, head.predict_proba(vectors)),
            "build_seconds_including_label_embedding": round(build_seconds, 3),
            "details": {key: value for key, value in head.details.items() if key not in ("label_phrases", "pool_points_per_label")},
        }
    return {"dataset": name, "labels": len(labels), "pool_size": int(len(pool)), "evaluated_texts": int(len(vectors)), **results}


def temperature_sweep(*, labels, descriptions, embed, pool, vectors, y) -> list[dict]:
    rows = []
    for variant, variant_descriptions in (("names", {}), ("descriptions", descriptions)):
        head = zero_shot.build_zero_shot_head(labels=labels, descriptions=variant_descriptions, embed=embed, pool_vectors=pool)
        for temperature in TEMPERATURE_SWEEP:
            proba = softmax(vectors @ head.label_vectors.T.astype(np.float64), temperature)
            rows.append({"variant": variant, "temperature": temperature, **metrics(labels, y, proba)})
    return rows


def creation_timing(*, labels, embed, pool: np.ndarray) -> dict:
    label_vector_cache: dict[str, np.ndarray] = {}

    def cached_embed(texts):  # time the pool work, not the embedder
        missing = [text for text in texts if text not in label_vector_cache]
        if missing:
            label_vector_cache.update(zip(missing, np.asarray(embed(missing), dtype=np.float32)))
        return np.stack([label_vector_cache[text] for text in texts])

    zero_shot.build_zero_shot_head(labels=labels, descriptions={}, embed=cached_embed)
    # A million rows in the vector store's float16, as a dataset of that size would hand them over (768 MB).
    million_rows = np.tile(pool.astype(np.float16), (-(-1_000_000 // len(pool)), 1))[:1_000_000]
    timings = {}
    for name, rows in (("pool_10k_float32", pool[:10_000]), ("pool_1m_float16_subsampled", million_rows)):
        runs = []
        for _ in range(3):
            started = time.perf_counter()
            zero_shot.build_zero_shot_head(labels=labels, descriptions={}, embed=cached_embed, pool_vectors=rows)
            runs.append(time.perf_counter() - started)
        timings[name] = {"rows": int(len(rows)), "median_seconds": round(float(np.median(runs)), 3)}
    return timings


def train_split_report(descriptions_path: Path, worst: int = 15) -> None:
    """How a Banking77 description set does on the TRAIN split (pool = the train texts, scored on their labels),
    with the labels confused most: the tool for revising descriptions without looking at the test split."""
    from collections import Counter

    embed, embedder = pick_embedder()
    train_texts, train_y = read_labeled_csv(BANKING77_DIR / "train.csv")
    labels = sorted(set(train_y))
    pool = cached_vectors(embed, embedder, "banking77_train", train_texts)
    with threadpool_limits(1):
        head = zero_shot.build_zero_shot_head(labels=labels, descriptions=json.loads(descriptions_path.read_text()),
                                              embed=embed, pool_vectors=pool)
        predicted = np.array(labels)[head.predict_proba(pool).argmax(axis=1)]
    gold = np.array(train_y)
    print(f"train-split accuracy {np.mean(predicted == gold):.2%} ({descriptions_path.name})")
    recall = {label: float(np.mean(predicted[gold == label] == label)) for label in labels}
    for label in sorted(labels, key=recall.get)[:worst]:
        taken_by = ", ".join(f"{other} {n}" for other, n in Counter(predicted[gold == label]).most_common(4) if other != label)
        print(f"  {recall[label]:4.0%} {label}: its messages went to {taken_by}")


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--train-split":
        train_split_report(Path(sys.argv[2]))
        return
    embed, embedder = pick_embedder()
    print(f"embedder: {embedder}", flush=True)
    train_texts, _ = read_labeled_csv(BANKING77_DIR / "train.csv")  # the pool: its labels are never read
    test_texts, test_y = read_labeled_csv(BANKING77_DIR / "test.csv")
    banking_labels = sorted(set(test_y))
    # The descriptions a lead would write: after reading five training messages per label, revised on the train
    # split's confusions (README_zero_shot.md). The first set, written from the label names alone, is measured too.
    banking_descriptions = json.loads((DATA / "banking77_descriptions.json").read_text())
    banking_blind = json.loads((DATA / "banking77_descriptions_blind.json").read_text())
    ticket_texts, ticket_y = read_labeled_csv(DATA / "support_tickets.csv")
    ticket_labels = sorted(set(ticket_y))
    ticket_descriptions = json.loads((DATA / "support_tickets_descriptions.json").read_text())

    pool = cached_vectors(embed, embedder, "banking77_train", train_texts)
    test_vectors = cached_vectors(embed, embedder, "banking77_test", test_texts)
    ticket_vectors = cached_vectors(embed, embedder, "support_tickets", ticket_texts)
    debian_train, debian_train_y = read_labeled_csv(DATA / "debian_sections" / "train.csv")
    debian_test, debian_test_y = read_labeled_csv(DATA / "debian_sections" / "test.csv")
    debian_vectors = np.vstack([cached_vectors(embed, embedder, "debian_sections_train", debian_train),
                                cached_vectors(embed, embedder, "debian_sections_test", debian_test)])
    debian_y = debian_train_y + debian_test_y
    debian_labels = sorted(set(debian_y))
    debian_descriptions = json.loads((DATA / "debian_sections_descriptions.json").read_text())

    with threadpool_limits(1):
        datasets = [
            evaluate_dataset("banking77", labels=banking_labels, descriptions=banking_descriptions, embed=embed,
                             pool=pool, vectors=test_vectors, y=test_y,
                             other_descriptions={"descriptions_blind": banking_blind}),
            evaluate_dataset("support_tickets", labels=ticket_labels, descriptions=ticket_descriptions, embed=embed,
                             pool=ticket_vectors, vectors=ticket_vectors, y=ticket_y),
            evaluate_dataset("debian_sections", labels=debian_labels, descriptions=debian_descriptions, embed=embed,
                             pool=debian_vectors, vectors=debian_vectors, y=debian_y),
        ]
        sweep = temperature_sweep(labels=ticket_labels, descriptions=ticket_descriptions, embed=embed,
                                  pool=ticket_vectors, vectors=ticket_vectors, y=ticket_y)
        timing = creation_timing(labels=banking_labels, embed=embed, pool=pool)

    print(f"\n{'dataset':16s} {'labels from':26s} {'configuration':9s} {'accuracy':>8s} {'macro-F1':>8s} {'mean conf':>9s} {'ECE':>6s}")
    for result in datasets:
        for variant in [key for key in result if key in ("names", "descriptions", "descriptions_blind")]:
            for configuration in ("baseline", "no_pool", "method"):
                m = result[variant][configuration]
                print(f"{result['dataset']:16s} {variant:26s} {configuration:9s} {m['accuracy']:8.1%} {m['macro_f1']:8.1%} "
                      f"{m['mean_confidence']:9.1%} {m['ece']:6.3f}")
    print("\ntemperature sweep on support_tickets (method head):")
    for row in sweep:
        print(f"  {row['variant']:13s} T={row['temperature']:<5} accuracy {row['accuracy']:.1%} mean conf {row['mean_confidence']:.1%} ECE {row['ece']:.3f}")
    print("\nhead creation (label vectors cached, 77 labels):")
    for name, value in timing.items():
        print(f"  {name:28s} {value['rows']:>8d} rows  {value['median_seconds']:.3f} s")

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "embedder": embedder,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "threads": 1},
        "datasets": datasets,
        "temperature_sweep_support_tickets": sweep,
        "creation_timing": timing,
    }, indent=2) + "\n")
    print(f"\nwrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
