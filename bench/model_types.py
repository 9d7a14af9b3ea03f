"""Model types compared on Banking77: describe-and-classify, active-learning and fine-tuned.

For 500 and 1,000 labels (stratified random subsets of the train set; --subset-seeds draws, default 3, each
reported and averaged) and the full train set, each type is trained on the same labels and measured on the whole test set (3,080 texts): accuracy,
macro-F1, expected calibration error (15 bins) and training time; then inference latency for 8 texts
(p50/p90 over repeated calls, embedding step included, the types interleaved call by call so that load
from other processes hits them equally). `--eval-speed` times evaluating one version on 100k records
(metrics + threshold curve + ECE). Prints its figures and writes bench/results/model_types.json.

    .venv/bin/python bench/model_types.py [--sizes 500 1000 full] [--subset-seeds 3] [--prior pool|names] [--latency-calls 300]
        [--eval-speed-only] [--out PATH]

Vectors come from the project's embedder (labeling.embeddings.embed_texts, int8 ONNX), or from
sentence-transformers if that cannot be used; the JSON says which. They are cached under bench/.cache/.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# One embedder thread: on a shared machine onnxruntime's default (a spinning thread per core) turns other
# processes' load into latency spikes of hundreds of milliseconds that say nothing about the model types.
os.environ.setdefault("LABELF_EMBEDDER_THREADS", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from bench.embedding_cache import cached_vectors, pick_embedder, read_labeled_csv  # noqa: E402
from models_app.ml.artifacts import predict_texts  # noqa: E402
from models_app.ml.calibration import expected_calibration_error  # noqa: E402
from models_app.ml.evaluation import evaluate  # noqa: E402
from models_app.ml.fine_tuning import train_fine_tuned_head  # noqa: E402
from models_app.ml.thresholds import threshold_curve  # noqa: E402

DATA_DIR = Path(os.environ.get("BANKING77_DIR", ROOT.parent / "shared" / "data" / "banking77"))
RESULTS = ROOT / "bench" / "results" / "model_types.json"
SEED = 0
# The product's self-training pool sample (models_app.training_services.SELF_TRAINING_POOL).
POOL_SAMPLE = 10_000


def zero_shot_head(labels, embed, pool_vectors=None):
    try:
        from models_app.ml.zero_shot import build_zero_shot_head

        source = "models_app.ml.zero_shot.build_zero_shot_head (label names" + (
            ", refined on the unlabeled train vectors, as the product refines it on the dataset)" if pool_vectors is not None
            else ", no pool)")
        return build_zero_shot_head(labels=labels, descriptions={}, embed=embed, pool_vectors=pool_vectors), source
    except ImportError:
        from scipy.special import softmax

        class CosineHead:
            def __init__(self, label_vectors):
                self.labels, self.label_vectors = labels, label_vectors

            def predict_proba(self, vectors, texts=None):
                return softmax(vectors @ self.label_vectors.T / 0.05, axis=1)

        return CosineHead(np.asarray(embed([label.replace("_", " ") for label in labels]))), "plain cosine head (T=0.05)"


def active_learning_trainer():
    try:
        from models_app.ml.training import train_active_learning_head

        return (lambda labels, vectors, y, prior: train_active_learning_head(labels=labels, vectors=vectors, y=y, prior_head=prior),
                "models_app.ml.training.train_active_learning_head (prior: the describe-and-classify head)")
    except ImportError:
        from sklearn.linear_model import LogisticRegression

        class LogisticHead:
            def __init__(self, labels, classifier):
                self.labels, self.classifier = labels, classifier

            def predict_proba(self, vectors, texts=None):
                return self.classifier.predict_proba(vectors)

        return (lambda labels, vectors, y, prior: LogisticHead(labels, LogisticRegression(C=10, max_iter=300).fit(vectors, y)),
                "LogisticRegression C=10 on the vectors")


def load_banking77(embed, embedder: str) -> dict:
    """Banking77's labels (sorted), train and test texts, label indices and cached vectors."""
    train_texts, train_categories = read_labeled_csv(DATA_DIR / "train.csv")
    test_texts, test_categories = read_labeled_csv(DATA_DIR / "test.csv")
    labels = sorted(set(train_categories))
    index = {label: i for i, label in enumerate(labels)}
    return {"labels": labels, "train_texts": train_texts, "test_texts": test_texts,
            "y_train": np.array([index[c] for c in train_categories]), "y_test": np.array([index[c] for c in test_categories]),
            "train_vectors": cached_vectors(embed, embedder, "banking77_train", train_texts),
            "test_vectors": cached_vectors(embed, embedder, "banking77_test", test_texts)}


def label_draw(y_train: np.ndarray, size: str, seed: int) -> np.ndarray:
    """Sorted train rows of one labeled subset: all of them for "full", else a stratified random draw of `size`."""
    if size == "full":
        return np.arange(len(y_train))
    chosen, _ = train_test_split(np.arange(len(y_train)), train_size=int(size), stratify=y_train, random_state=seed)
    return np.sort(chosen)


def measure(head, labels, y_test, test_vectors, test_texts) -> dict:
    proba = head.predict_proba(test_vectors, test_texts)
    metrics = evaluate(labels=labels, y_true=y_test, proba=proba, evaluation="holdout")
    return {"accuracy": metrics["accuracy"], "f1_macro": metrics["f1_macro"],
            "ece": expected_calibration_error(y_test, proba, bins=15)}


def latency(heads: dict, embed, texts: list[str], calls: int) -> dict:
    """p50/p90 in ms of (a) the inference path as the product runs it (models_app.ml.artifacts.predict_texts:
    embedding, or for a fine-tuned head with its text stage on, embedding only the texts the stage leaves to the
    vectors, then the head), and (b) the head alone on ready vectors. The first 10 calls warm caches and are
    not counted."""
    rng = np.random.default_rng(SEED)
    end_to_end = {name: [] for name in heads}
    head_only = {name: [] for name in heads}
    for call in range(calls + 10):
        batch = [texts[i] for i in rng.choice(len(texts), 8, replace=False)]
        vectors = embed(batch)
        order = list(heads.items())
        if call % 2:
            order.reverse()  # neither type always runs right after the other
        for name, head in order:
            started = time.perf_counter()
            predict_texts(head, batch, embed)
            finished = time.perf_counter()
            head.predict_proba(vectors, batch)
            head_finished = time.perf_counter()
            if call >= 10:
                end_to_end[name].append((finished - started) * 1000)
                head_only[name].append((head_finished - finished) * 1000)

    def summary(timings):
        return {"p50_ms": round(float(np.percentile(timings, 50)), 3), "p90_ms": round(float(np.percentile(timings, 90)), 3)}

    return {name: {"calls": calls, "embedding_plus_head": summary(end_to_end[name]), "head_only": summary(head_only[name])}
            for name in heads}


def text_stage_share(head, texts: list[str]) -> float:
    """Share of `texts` the fine-tuned head's text stage answers alone: the ones never embedded at inference."""
    embedded: list[str] = []

    def counting_embed(batch: list[str]) -> np.ndarray:
        embedded.extend(batch)
        return np.zeros((len(batch), 384), dtype=np.float32)

    head.predict_proba_from_texts(texts, counting_embed)
    return round(1 - len(embedded) / len(texts), 4)


def eval_speed(n: int = 100_000, k: int = 77) -> dict:
    rng = np.random.default_rng(SEED)
    labels = [f"label_{i}" for i in range(k)]
    y = rng.integers(0, k, n)
    proba = rng.dirichlet(np.ones(k) * 0.1, n)
    timings = {}
    started = time.perf_counter()
    evaluate(labels=labels, y_true=y, proba=proba, evaluation="holdout")
    timings["evaluate_s"] = time.perf_counter() - started
    started = time.perf_counter()
    threshold_curve(y_true=y, proba=proba)
    timings["threshold_curve_s"] = time.perf_counter() - started
    started = time.perf_counter()
    expected_calibration_error(y, proba)
    timings["ece_s"] = time.perf_counter() - started
    total = sum(timings.values())
    return {"records": n, "labels": k, **{key: round(value, 3) for key, value in timings.items()}, "total_s": round(total, 3),
            "target_s": 10, "meets_target": total <= 10}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["500", "1000", "full"])
    parser.add_argument("--latency-calls", type=int, default=300)
    parser.add_argument("--eval-speed-only", action="store_true")
    parser.add_argument("--prior", choices=["pool", "names"], default="pool",
                        help="describe-and-classify head (and prior of both trained types): refined on the unlabeled "
                             "train vectors as in the product (default), or from the label names alone")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--subset-seeds", type=int, default=3, help="random label subsets per size below full")
    args = parser.parse_args()

    results: dict = {"dataset": "Banking77 (train 10,003 / test 3,080, 77 labels)", "seed": SEED,
                     "machine": f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}, shared with other processes"}
    with threadpool_limits(limits=1):
        results["eval_speed"] = eval_speed()
    print("evaluation of 100k records:", results["eval_speed"], flush=True)
    if args.eval_speed_only:
        print(json.dumps(results["eval_speed"], indent=2))
        return

    embed, embedder = pick_embedder()
    print("vectors:", embedder, flush=True)
    data = load_banking77(embed, embedder)
    labels, train_texts, test_texts = data["labels"], data["train_texts"], data["test_texts"]
    y_train, y_test, train_vectors, test_vectors = data["y_train"], data["y_test"], data["train_vectors"], data["test_vectors"]
    zero_shot, zero_shot_source = zero_shot_head(labels, embed, train_vectors if args.prior == "pool" else None)
    train_active_learning, active_learning_source = active_learning_trainer()
    results.update({"embedder": embedder, "describe_and_classify": zero_shot_source, "active_learning": active_learning_source,
                    "fine_tuned": "models_app.ml.fine_tuning.train_fine_tuned_head", "sizes": {}})

    heads_for_latency = {}
    kinds = ("describe-and-classify", "active-learning", "fine-tuned")
    for size in args.sizes:
        # A subset is one random draw of labels: several draws (seeds) show how much the comparison depends on it.
        seeds = [SEED] if size == "full" else [SEED + i for i in range(args.subset_seeds)]
        per_seed = []
        for seed in seeds:
            chosen = label_draw(y_train, size, seed)
            vectors, y = train_vectors[chosen], y_train[chosen]
            texts = [train_texts[i] for i in chosen]
            one: dict = {"seed": seed, "labels": int(len(chosen)), "min_per_class": int(np.bincount(y, minlength=len(labels)).min())}
            one["describe-and-classify"] = {**measure(zero_shot, labels, y_test, test_vectors, test_texts), "train_s": 0.0}
            started = time.perf_counter()
            active = train_active_learning(labels, vectors, y, zero_shot)
            trained = time.perf_counter() - started
            one["active-learning"] = {**measure(active, labels, y_test, test_vectors, test_texts), "train_s": round(trained, 2)}
            # The product gives the fine-tuned trainer the model's describe-and-classify head as its prior too, and
            # a sample of the dataset's unlabeled pool records (at most POOL_SAMPLE) for self-training: here the
            # train texts not drawn (none for the full set). The same head without the pool is measured beside it.
            unlabeled = np.setdiff1d(np.arange(len(y_train)), chosen)
            if len(unlabeled) > POOL_SAMPLE:
                unlabeled = np.sort(np.random.default_rng(seed).choice(unlabeled, POOL_SAMPLE, replace=False))
            pool = {"pool_texts": [train_texts[i] for i in unlabeled], "pool_vectors": train_vectors[unlabeled]}
            for kind, extra in (("fine-tuned", pool), ("fine-tuned without self-training", None)):
                if extra is None and not len(unlabeled):
                    continue  # nothing to self-train on: the two are the same head
                started = time.perf_counter()
                fine = train_fine_tuned_head(labels=labels, texts=texts, vectors=vectors, y=y, seed=SEED,
                                             prior_head=zero_shot, **(extra or {}))
                trained = time.perf_counter() - started
                one[kind] = {**measure(fine, labels, y_test, test_vectors, test_texts), "train_s": round(trained, 2),
                             "temperature": fine.details["temperature"], "calibration": fine.details["calibration"],
                             "vector_expert": fine.details["vector_expert"], "text_stage": fine.details["text_stage"],
                             "self_training": fine.details["self_training"],
                             "test_share_answered_by_text_stage": text_stage_share(fine, test_texts)}
                if kind == "fine-tuned":
                    product_fine = fine
            fine = product_fine
            one["fine_tuned_minus_active_learning_points"] = round(
                100 * (one["fine-tuned"]["accuracy"] - one["active-learning"]["accuracy"]), 2)
            per_seed.append(one)
            print(f"{size:>5} labels, seed {seed}: " + "  ".join(
                f"{kind} acc {one[kind]['accuracy']:.4f} F1 {one[kind]['f1_macro']:.4f} ECE {one[kind]['ece']:.4f} "
                f"train {one[kind]['train_s']}s" for kind in kinds + ("fine-tuned without self-training",)
                if kind in one), flush=True)
        row = {"labels": per_seed[0]["labels"], "seeds": len(per_seed)}
        for kind in kinds + ("fine-tuned without self-training",):
            if kind in per_seed[0]:
                row[kind] = {metric: round(float(np.mean([one[kind][metric] for one in per_seed])), 6)
                             for metric in ("accuracy", "f1_macro", "ece", "train_s")}
        row["fine_tuned_minus_active_learning_points"] = round(
            float(np.mean([one["fine_tuned_minus_active_learning_points"] for one in per_seed])), 2)
        row["per_seed"] = per_seed
        results["sizes"][size] = row
        print(f"{size:>5} labels, mean of {len(per_seed)}: fine-tuned minus active-learning "
              f"{row['fine_tuned_minus_active_learning_points']:+.2f} points", flush=True)
        if size == args.sizes[-1]:
            heads_for_latency = {"describe-and-classify": zero_shot, "active-learning": active, "fine-tuned": fine}

    results["latency_8_texts"] = {"trained_on": args.sizes[-1], "embedder_threads": os.environ["LABELF_EMBEDDER_THREADS"],
                                  **latency(heads_for_latency, embed, test_texts, args.latency_calls)}
    print("latency of 8 texts:", results["latency_8_texts"], flush=True)

    full = results["sizes"].get("full")
    thousand = results["sizes"].get("1000")
    lat = results["latency_8_texts"]
    results["targets"] = {
        "fine_tuned_full_accuracy_at_least_0.945": None if not full else full["fine-tuned"]["accuracy"] >= 0.945,
        "fine_tuned_1000_at_least_1.5_points_over_active_learning": None if not thousand else thousand["fine_tuned_minus_active_learning_points"] >= 1.5,
        "fine_tuned_p50_not_above_active_learning": (lat["fine-tuned"]["embedding_plus_head"]["p50_ms"]
                                                     <= lat["active-learning"]["embedding_plus_head"]["p50_ms"]),
        "fine_tuned_ece_at_most_0.03": all(one["fine-tuned"]["ece"] <= 0.03 for r in results["sizes"].values()
                                           for one in r["per_seed"]),
    }
    print("targets:", results["targets"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
