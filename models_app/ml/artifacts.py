"""Serialising a model version's classifier head ("artifact") with a checksum. Pure: no Django.

Every head, whatever its type, answers the same call:

    head.labels: list[str]                      # column order of the probabilities
    head.predict_proba(vectors, texts=None)     # (n, len(labels)) float64, rows sum to 1

`vectors` are the texts' L2-normalised sentence embeddings (n x 384, float32); heads that also use
the raw texts (e.g. n-gram features) read `texts`. A head that can answer some texts without their
vectors (the fine-tuned head's text stage) also has `predict_proba_from_texts(texts, embed)`, which
embeds only the others; `predict_texts` is the one way to classify raw texts with any head.
Artifacts are pickles of our own heads; they are only ever loaded after their SHA-256 matches the
checksum stored with the version, so a file changed on disk is refused rather than executed.
"""
from __future__ import annotations

import hashlib
import pickle
from typing import Protocol, Sequence

import numpy as np


class Head(Protocol):
    labels: list[str]

    def predict_proba(self, vectors: np.ndarray, texts: Sequence[str] | None = None) -> np.ndarray: ...


def predict_texts(head: Head, texts: Sequence[str], embed) -> np.ndarray:
    """`head.predict_proba(embed(texts), texts)`, embedding only what the head needs embedded."""
    texts = list(texts)
    from_texts = getattr(head, "predict_proba_from_texts", None)
    if from_texts is not None:
        return from_texts(texts, embed)
    return head.predict_proba(embed(texts), texts)


class ArtifactChecksumError(ValueError):
    pass


def checksum(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def dump_head(head: Head) -> bytes:
    return pickle.dumps(head, protocol=5)


def load_head(data: bytes, expected_checksum: str) -> Head:
    actual = checksum(data)
    if actual != expected_checksum:
        raise ArtifactChecksumError(f"artifact checksum {actual[:12]}… does not match the stored {expected_checksum[:12]}…")
    return pickle.loads(data)  # noqa: S301 - our own artifact, verified above
