"""Active-learning simulation: how many labels does our sampler save over random sampling?

    .venv/bin/python bench/al_simulation.py /work/shared/data/banking77/train.csv [--seeds 5] [--max-labels 2000]
        [--round-size 50] [--quick] [--subset-classes 20 --imbalance 10] [--name NAME]

A simulated annotator with the gold labels labels what each strategy asks for, in rounds, starting
with NO labels at all. Both strategies train the same head the product trains
(`models_app.ml.training.train_active_learning_head`, blended with the describe-and-classify prior);
"ours" ranks the pool with the product's `labeling.sampling.rank_pool` (queue of 500, the annotator
takes the top `round-size`), "random" takes uniformly random pool records. Before the first label
both use the zero-shot head, exactly like a new model in the product.

Honest accounting: our queue reserves 10% of its records for the evaluation split; the product never
trains on those, so here they are not trained on either, but they count as labels on the x-axis.
Accuracy is measured on the dataset's test file (default: test.csv beside the train file), which
neither strategy ever sees.

Label-saving factor at N labels = (labels random needs to reach our accuracy at N) / N, reading
random's mean curve (every round) with linear interpolation. Random runs on to --random-max-labels
(default 1.5 x --max-labels: 3,000 for 2,000) so that figure can be read beyond our last round; if
random never gets there the factor is reported as a lower bound (">").

Vectors: `bench.embedding_cache` (the product's embedder when it works here, else sentence-transformers
with the same model), cached in bench/.cache/. Cold-start prior:
`models_app.ml.zero_shot.build_zero_shot_head` on the label names turned into phrases.
Writes bench/results/al_simulation[_NAME].json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.embedding_cache import cached_vectors, pick_embedder, read_labeled_csv  # noqa: E402
from labeling.sampling import rank_pool  # noqa: E402
from models_app.ml.training import train_active_learning_head  # noqa: E402
from models_app.ml.zero_shot import build_zero_shot_head  # noqa: E402

RESULTS = ROOT / "bench" / "results"
CHECKPOINTS = (100, 200, 500, 1000, 2000)
QUEUE_SIZE = 500


def subset(rng, texts, cats, keep: list[str], imbalance: float, sizes: dict | None = None):
    """Rows of the kept classes; with imbalance R, class i keeps a share R**(-i/(n-1)) of its rows."""
    idx = []
    for i, label in enumerate(keep):
        rows = [j for j, c in enumerate(cats) if c == label]
        share = imbalance ** (-i / max(len(keep) - 1, 1))
        n = max(1, int(round(len(rows) * share))) if sizes is None else sizes[label]
        idx.extend(rng.choice(rows, size=min(n, len(rows)), replace=False).tolist())
    idx.sort()
    return idx


def interpolate_labels_needed(curve_labels: np.ndarray, curve_acc: np.ndarray, target: float) -> float | None:
    """First label count at which the (running-max) curve reaches target, linearly interpolated."""
    acc = np.maximum.accumulate(curve_acc)
    above = np.flatnonzero(acc >= target)
    if len(above) == 0:
        return None
    i = above[0]
    if i == 0:
        return float(curve_labels[0])
    x0, x1, a0, a1 = curve_labels[i - 1], curve_labels[i], acc[i - 1], acc[i]
    return float(x0 + (target - a0) / (a1 - a0) * (x1 - x0)) if a1 > a0 else float(x1)


def simulate(*, strategy, seed, pool_vectors, pool_y, test_vectors, test_y, labels, prior_head,
             max_labels, round_size, evaluation_share=0.1):
    rng = np.random.default_rng(seed)
    n_pool = len(pool_y)
    labeled = np.zeros(n_pool, dtype=bool)
    train_rows: list[int] = []
    evaluation_rows: list[int] = []
    head = prior_head
    curve = []
    fit_seconds = rank_seconds = 0.0
    round_index = 0
    while labeled.sum() < max_labels:
        n_given = int(labeled.sum())
        size = round_size if n_given < 1000 else 2 * round_size
        size = min(size, max_labels - n_given)
        free = np.flatnonzero(~labeled)
        if strategy == "random":
            picked = rng.choice(free, size=size, replace=False)
            picked_eval = []
        else:
            started = time.perf_counter()
            counts = np.bincount(pool_y[train_rows], minlength=len(labels)) if train_rows else np.zeros(len(labels))
            recommendations = rank_pool(
                proba=head.predict_proba(pool_vectors[free]),
                vectors=pool_vectors[free],
                labeled_counts=counts,
                queue_size=QUEUE_SIZE,
                evaluation_share=evaluation_share,
                seed=seed * 10_000 + round_index,
            )[:size]
            rank_seconds += time.perf_counter() - started
            picked = np.array([free[r.row] for r in recommendations])
            picked_eval = [free[r.row] for r in recommendations if r.reason == "evaluation"]
        labeled[picked] = True
        eval_set = set(int(r) for r in picked_eval)
        evaluation_rows += sorted(eval_set)
        train_rows += [int(r) for r in picked if int(r) not in eval_set]
        started = time.perf_counter()
        head = train_active_learning_head(
            labels=labels, vectors=pool_vectors[train_rows], y=pool_y[train_rows], prior_head=prior_head, seed=seed
        )
        fit_seconds += time.perf_counter() - started
        accuracy = float((head.predict_proba(test_vectors).argmax(axis=1) == test_y).mean())
        curve.append((int(labeled.sum()), accuracy, len(set(pool_y[train_rows].tolist()))))
        round_index += 1
    return {"curve": curve, "fit_seconds": round(fit_seconds, 2), "rank_seconds": round(rank_seconds, 2)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", type=Path, help="train CSV with text,category columns (the pool)")
    parser.add_argument("--test", type=Path, help="test CSV (default: test.csv beside the dataset)")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--max-labels", type=int, default=2000)
    parser.add_argument("--random-max-labels", type=int,
                        help="random sampling runs this far (default 1.5 x --max-labels), so the labels it needs to "
                             "match our accuracy can be read even where that is beyond --max-labels")
    parser.add_argument("--round-size", type=int, default=50, help="labels per round below 1,000 (double above)")
    parser.add_argument("--evaluation-share", type=float, default=0.1)
    parser.add_argument("--quick", action="store_true", help="2 seeds, up to 1,000 labels")
    parser.add_argument("--subset-classes", type=int, help="keep only this many classes (a differently shaped dataset)")
    parser.add_argument("--imbalance", type=float, default=1.0, help="with --subset-classes: largest/smallest class ratio")
    parser.add_argument("--name", help="results file suffix: bench/results/al_simulation_NAME.json")
    parser.add_argument("--descriptions", type=Path,
                        help="JSON {label: one-line description} for the describe-and-classify prior (default: label names)")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.max_labels = min(args.seeds, 2), min(args.max_labels, 1000)
    test_path = args.test or args.dataset.with_name("test.csv")

    texts, cats = read_labeled_csv(args.dataset)
    test_texts, test_cats = read_labeled_csv(test_path)
    embed, embed_name = pick_embedder()
    stem = f"{args.dataset.parent.name}_{args.dataset.stem}"
    pool_vectors = cached_vectors(embed, embed_name, stem, texts)
    test_vectors = cached_vectors(embed, embed_name, f"{args.dataset.parent.name}_{test_path.stem}", test_texts)
    labels = sorted(set(cats))
    if args.subset_classes:
        shape_rng = np.random.default_rng(12345)
        keep = sorted(shape_rng.choice(labels, size=args.subset_classes, replace=False).tolist())
        shape_rng.shuffle(keep)  # which classes are large is random, not alphabetical
        pool_idx = subset(shape_rng, texts, cats, keep, args.imbalance)
        kept_counts = {c: sum(1 for i in pool_idx if cats[i] == c) for c in keep}
        # The test set gets the same class proportions (accuracy then reflects the pool's skew).
        test_sizes = {c: max(1, round(kept_counts[c] * 40 / max(kept_counts.values()))) for c in keep}
        test_idx = subset(shape_rng, test_texts, test_cats, keep, 1.0, test_sizes)
        pool_vectors, test_vectors = pool_vectors[pool_idx], test_vectors[test_idx]
        cats, test_cats = [cats[i] for i in pool_idx], [test_cats[i] for i in test_idx]
        labels = sorted(keep)
    index = {label: i for i, label in enumerate(labels)}
    pool_y = np.array([index[c] for c in cats])
    test_y = np.array([index[c] for c in test_cats])
    max_labels = min(args.max_labels, len(pool_y))
    random_max_labels = min(args.random_max_labels or int(1.5 * max_labels), len(pool_y))

    descriptions = json.loads(args.descriptions.read_text()) if args.descriptions else {}
    prior_head = build_zero_shot_head(labels=labels, descriptions=descriptions, embed=embed, pool_vectors=pool_vectors)
    zero_shot_accuracy = float((prior_head.predict_proba(test_vectors).argmax(axis=1) == test_y).mean())
    print(f"pool {len(pool_y)} records, test {len(test_y)}, {len(labels)} labels; vectors: {embed_name}")
    prior_source = f"descriptions from {args.descriptions.name}" if args.descriptions else "label phrases"
    print(f"zero-shot prior (build_zero_shot_head on {prior_source}): accuracy {zero_shot_accuracy:.3f}")

    runs: dict[str, list] = {"ours": [], "random": []}
    for seed in range(args.seeds):
        for strategy in runs:
            started = time.perf_counter()
            run = simulate(strategy=strategy, seed=seed, pool_vectors=pool_vectors, pool_y=pool_y,
                           test_vectors=test_vectors, test_y=test_y, labels=labels, prior_head=prior_head,
                           max_labels=max_labels if strategy == "ours" else random_max_labels,
                           round_size=args.round_size,
                           evaluation_share=args.evaluation_share)
            run["seconds"] = round(time.perf_counter() - started, 1)
            runs[strategy].append(run)
            at = {n: a for n, a, _ in run["curve"]}
            print(f"seed {seed} {strategy:6s} " + " ".join(f"{n}:{at[n]:.3f}" for n in CHECKPOINTS if n in at)
                  + f"  ({run['seconds']} s)", flush=True)

    # Both arms take the same round sizes, so random's curve extends ours (it runs further).
    labels_at = {s: np.array([n for n, _, _ in rs[0]["curve"]]) for s, rs in runs.items()}
    curve_labels = labels_at["ours"]
    mean_curve = {s: np.mean([[a for _, a, _ in r["curve"]] for r in rs], axis=0) for s, rs in runs.items()}
    std_curve = {s: np.std([[a for _, a, _ in r["curve"]] for r in rs], axis=0) for s, rs in runs.items()}
    checkpoints = [n for n in CHECKPOINTS if n in set(curve_labels.tolist())]
    table = {}
    for s in runs:
        points = [n for n in CHECKPOINTS + (3000,) if n in set(labels_at[s].tolist())]
        table[s] = {str(n): {"mean": round(float(mean_curve[s][labels_at[s] == n][0]), 4),
                             "std": round(float(std_curve[s][labels_at[s] == n][0]), 4)} for n in points}
    savings = {}
    for n in (500, 1000):
        if n not in checkpoints:
            continue
        target = float(mean_curve["ours"][curve_labels == n][0])
        needed = interpolate_labels_needed(labels_at["random"], mean_curve["random"], target)
        savings[str(n)] = ({"factor": round(needed / n, 2), "random_labels_needed": round(needed)} if needed is not None
                           else {"factor_at_least": round(float(labels_at["random"][-1]) / n, 2), "random_labels_needed": None})
    common = len(curve_labels)
    assert np.array_equal(labels_at["random"][:common], curve_labels)
    gaps = mean_curve["ours"] - mean_curve["random"][:common]
    never_worse = bool(np.all(gaps >= -1e-9))
    worst_gap = float(gaps.min())
    worst_gap_at = int(curve_labels[int(gaps.argmin())])

    print("\naccuracy on the test set (mean ± std over seeds)")
    columns = [n for n in CHECKPOINTS + (3000,) if str(n) in table["random"]]
    print("labels  " + "  ".join(f"{n:>13d}" for n in columns))
    for s in runs:
        print(f"{s:7s} " + "  ".join(f"{table[s][str(n)]['mean']:.3f} ± {table[s][str(n)]['std']:.3f}" if str(n) in table[s]
                                     else f"{'':>13s}" for n in columns))
    for n, v in savings.items():
        text = f"{v['factor']}x" if "factor" in v else f"> {v['factor_at_least']}x (random never reaches it)"
        print(f"label-saving factor at {n}: {text}")
    print(f"ours >= random at every round: {never_worse} (worst gap {worst_gap:+.3f} at {worst_gap_at} labels)")

    result = {
        "dataset": str(args.dataset), "test": str(test_path),
        "shape": {"subset_classes": args.subset_classes, "imbalance": args.imbalance} if args.subset_classes else "full",
        "pool_size": int(len(pool_y)), "test_size": int(len(test_y)), "labels": len(labels),
        "vectors": embed_name, "prior": f"models_app.ml.zero_shot.build_zero_shot_head ({prior_source})",
        "zero_shot_accuracy": round(zero_shot_accuracy, 4),
        "seeds": args.seeds, "max_labels": max_labels, "random_max_labels": random_max_labels,
        "round_size": args.round_size,
        "evaluation_share": args.evaluation_share, "queue_size": QUEUE_SIZE,
        "start": "no labels (cold start from the zero-shot prior)",
        "accuracy": table, "label_saving_factor": savings,
        "ours_never_worse_than_random": never_worse, "worst_gap": round(worst_gap, 4),
        "worst_gap_at_labels": worst_gap_at,
        "mean_curves": {s: [[int(n), round(float(a), 4)] for n, a in zip(labels_at[s], mean_curve[s])] for s in runs},
        "seconds": {s: {"fit": round(sum(r["fit_seconds"] for r in rs), 1),
                        "rank": round(sum(r["rank_seconds"] for r in rs), 1)} for s, rs in runs.items()},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / (f"al_simulation_{args.name}.json" if args.name else "al_simulation.json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")
    return result


if __name__ == "__main__":
    main()
