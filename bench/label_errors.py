"""Label-error detection on Banking77 train with 5% of the labels flipped at random.

For each seed: flip round(5% of 10,003) labels, each to a different class chosen uniformly; run the product's
pure function (models_app.ml.label_errors.find_label_issues: 5-fold out-of-fold logistic regression on the
stored MiniLM vectors, temperature scaling, cleanlab) and measure precision, recall and F1 of the flagged
records against the flipped ones. The out-of-fold probabilities of each seed are computed once and then fed
to the other filters cleanlab offers (and without calibration), so the choice of filter is made on the same
predictions. Also precision among the first 100 / 250 ranked issues (a reviewer works from the top).
Prints its figures and writes bench/results/label_errors.json.

    .venv/bin/python bench/label_errors.py [--seeds 5] [--rate 0.05]

Note: Banking77's own labels are not perfect; an original label error the method flags counts as a false
positive here, so precision is a lower bound.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LABELF_EMBEDDER_THREADS", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from bench.embedding_cache import cached_vectors, pick_embedder, read_labeled_csv  # noqa: E402
from models_app.ml import label_errors  # noqa: E402

DATA_DIR = Path(os.environ.get("BANKING77_DIR", ROOT.parent / "shared" / "data" / "banking77"))
RESULTS = ROOT / "bench" / "results" / "label_errors.json"
FILTERS = ("low_self_confidence", "prune_by_noise_rate", "prune_by_class", "both", "confident_learning",
           "low_normalized_margin", "predicted_neq_given")
TARGET = {"precision": 0.7, "recall": 0.7}


def flip_labels(y: np.ndarray, n_classes: int, rate: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    rows = rng.choice(y.size, int(round(rate * y.size)), replace=False)
    noisy = y.copy()
    noisy[rows] = (y[rows] + rng.integers(1, n_classes, size=rows.size)) % n_classes  # never the same class
    return noisy, np.sort(rows)


def scores(flagged_rows: list[int], flipped: set[int]) -> dict:
    hits = len(set(flagged_rows) & flipped)
    precision = hits / len(flagged_rows) if flagged_rows else 0.0
    recall = hits / len(flipped)
    f1 = 2 * precision * recall / (precision + recall) if hits else 0.0
    return {"flagged": len(flagged_rows), "true_positives": hits, "precision": round(precision, 4),
            "recall": round(recall, 4), "f1": round(f1, 4)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--rate", type=float, default=0.05)
    args = parser.parse_args()

    texts, categories = read_labeled_csv(DATA_DIR / "train.csv")
    labels = sorted(set(categories))
    index = {label: i for i, label in enumerate(labels)}
    y_true = np.array([index[c] for c in categories])
    embed, embedder = pick_embedder()
    vectors = cached_vectors(embed, embedder, "banking77_train", texts)
    print(f"Banking77 train: {len(texts)} texts, {len(labels)} labels; vectors: {embedder}", flush=True)

    per_seed = []
    for seed in range(args.seeds):
        y, flipped_rows = flip_labels(y_true, len(labels), args.rate, seed)
        flipped = set(flipped_rows.tolist())
        started = time.perf_counter()
        proba = label_errors.out_of_fold_proba(vectors=vectors, y=y, n_classes=len(labels), seed=seed)
        cross_validation_s = time.perf_counter() - started
        started = time.perf_counter()
        # The product's call, fed the probabilities just computed (find_label_issues computes the same itself).
        report = label_errors.find_label_issues(vectors=vectors, y=y, n_classes=len(labels), seed=seed, proba=proba)
        flag_s = time.perf_counter() - started
        ranked = [issue.row for issue in report.issues]
        chosen = scores(ranked, flipped)
        suggested_right = sum(1 for issue in report.issues if issue.row in flipped and issue.suggested == y_true[issue.row])
        row = {
            "seed": seed, "flipped": len(flipped), **chosen,
            "suggested_label_is_the_original": round(suggested_right / max(1, chosen["true_positives"]), 4),
            "precision_at_100": scores(ranked[:100], flipped)["precision"],
            "precision_at_250": scores(ranked[:250], flipped)["precision"],
            "out_of_fold_accuracy_vs_given": round(report.out_of_fold_accuracy, 4),
            "temperature": round(report.temperature, 4),
            "cross_validation_s": round(cross_validation_s, 2), "flag_s": round(flag_s, 2),
            "variants": {},
        }
        for calibrate in (True, False):
            for filter_by in FILTERS:
                variant = label_errors.find_label_issues(vectors=vectors, y=y, n_classes=len(labels), seed=seed,
                                                         proba=proba, calibrate=calibrate, filter_by=filter_by)
                row["variants"][f"{filter_by}{'' if calibrate else ' (uncalibrated)'}"] = scores(
                    [issue.row for issue in variant.issues], flipped)
        per_seed.append(row)
        print(f"seed {seed}: flagged {chosen['flagged']} of {len(flipped)} flipped: precision {chosen['precision']:.3f} "
              f"recall {chosen['recall']:.3f} F1 {chosen['f1']:.3f}; suggestion = original label for "
              f"{row['suggested_label_is_the_original']:.1%} of the hits; P@100 {row['precision_at_100']:.2f}; "
              f"cross-validation {cross_validation_s:.1f} s", flush=True)

    def median(key: str, rows=per_seed):
        return round(statistics.median(r[key] for r in rows), 4)

    summary = {key: median(key) for key in ("precision", "recall", "f1", "flagged", "precision_at_100",
                                            "precision_at_250", "suggested_label_is_the_original", "cross_validation_s")}
    variants = {name: {key: round(statistics.median(r["variants"][name][key] for r in per_seed), 4)
                       for key in ("flagged", "precision", "recall", "f1")}
                for name in per_seed[0]["variants"]}
    print("\nmedian over seeds (product's method: low_self_confidence, calibrated):", summary)
    print(f"{'filter':42s} {'flagged':>8s} {'precision':>10s} {'recall':>8s} {'F1':>6s}")
    for name, v in sorted(variants.items(), key=lambda item: -item[1]["f1"]):
        print(f"{name:42s} {v['flagged']:8.0f} {v['precision']:10.3f} {v['recall']:8.3f} {v['f1']:6.3f}")
    meets = all(r["precision"] >= TARGET["precision"] and r["recall"] >= TARGET["recall"] for r in per_seed)
    print(f"target precision >= {TARGET['precision']} at recall >= {TARGET['recall']} on every seed: {meets}")

    results = {
        "dataset": f"Banking77 train ({len(texts)} texts, {len(labels)} labels)",
        "noise": f"{args.rate:.0%} of labels flipped uniformly to another class, per seed",
        "embedder": embedder,
        "method": (f"models_app.ml.label_errors.find_label_issues: {label_errors.FOLDS}-fold out-of-fold logistic "
                   f"regression (C=10), temperature-scaled, cleanlab filter_by={label_errors.FILTER_BY!r}"),
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, shared with other processes",
        "seeds": args.seeds,
        "median": summary,
        "variants_median": variants,
        "per_seed": per_seed,
        "target": {**TARGET, "met_on_every_seed": meets},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
