"""Vector chunks through Django's storage API: layout, round trip, idempotent atomic writes, cache, delete."""
from __future__ import annotations

import os

import numpy as np
import pytest
from django.core.files.storage import default_storage

from labeling import embeddings
from labeling.embeddings import (
    EMBEDDING_DIM,
    vectors_cache_clear,
    vectors_chunk_exists,
    vectors_delete,
    vectors_gather,
    vectors_load,
    vectors_write_chunk,
)


def _unit_vectors(rows: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(rows, EMBEDDING_DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _write_dataset(dataset_id: int, vectors: np.ndarray, chunk_size: int) -> None:
    for chunk_index, start in enumerate(range(0, len(vectors), chunk_size)):
        vectors_write_chunk(dataset_id=dataset_id, chunk_index=chunk_index, vectors=vectors[start:start + chunk_size])


@pytest.fixture(autouse=True)
def _empty_cache():
    vectors_cache_clear()
    yield
    vectors_cache_clear()


def test_chunks_round_trip_in_row_order_with_a_partial_last_chunk():
    vectors = _unit_vectors(10, seed=1)
    _write_dataset(7, vectors, chunk_size=4)
    assert [vectors_chunk_exists(dataset_id=7, chunk_index=i) for i in range(4)] == [True, True, True, False]
    assert default_storage.exists("vectors/dataset_7/chunk_2.npy")

    loaded = vectors_load(dataset_id=7, row_count=10, chunk_size=4)
    assert loaded.dtype == np.float32 and loaded.shape == (10, EMBEDDING_DIM)
    # float16 on storage: components are within half a unit in the 11th bit; cosines barely move.
    assert np.abs(loaded - vectors).max() < 5e-4
    assert np.abs((loaded * vectors).sum(axis=1) - 1).max() < 1e-4
    # Row r comes from chunk r // 4 at position r % 4: chunk 1 holds exactly rows 4..7.
    with default_storage.open("vectors/dataset_7/chunk_1.npy", "rb") as handle:
        chunk = np.load(handle)
    assert chunk.shape == (4, EMBEDDING_DIM) and chunk.dtype == np.float16
    assert np.allclose(chunk.astype(np.float32), vectors[4:8], atol=5e-4)


def test_rewriting_a_chunk_replaces_it_and_leaves_no_temporary_files():
    first, second = _unit_vectors(4, seed=2), _unit_vectors(4, seed=3)
    vectors_write_chunk(dataset_id=3, chunk_index=0, vectors=first)
    vectors_write_chunk(dataset_id=3, chunk_index=0, vectors=first)  # a redelivered task
    assert np.allclose(vectors_load(dataset_id=3, row_count=4, chunk_size=4), first, atol=5e-4)

    vectors_write_chunk(dataset_id=3, chunk_index=0, vectors=second)
    # The write also invalidated this process's cache, so the new vectors are what loads.
    assert np.allclose(vectors_load(dataset_id=3, row_count=4, chunk_size=4), second, atol=5e-4)
    assert os.listdir(default_storage.path("vectors/dataset_3")) == ["chunk_0.npy"]


def test_a_write_interrupted_before_publishing_keeps_the_previous_chunk_whole(monkeypatch):
    previous = _unit_vectors(4, seed=4)
    vectors_write_chunk(dataset_id=5, chunk_index=0, vectors=previous)

    def crash(source, destination):
        raise OSError("disk full")

    monkeypatch.setattr(embeddings.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        vectors_write_chunk(dataset_id=5, chunk_index=0, vectors=_unit_vectors(4, seed=5))
    monkeypatch.undo()

    assert os.listdir(default_storage.path("vectors/dataset_5")) == ["chunk_0.npy"]
    assert np.allclose(vectors_load(dataset_id=5, row_count=4, chunk_size=4), previous, atol=5e-4)


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros((3, 100), dtype=np.float32), "shape"),
        (np.zeros(EMBEDDING_DIM, dtype=np.float32), "shape"),
        (np.full((2, EMBEDDING_DIM), np.nan, dtype=np.float32), "NaN"),
    ],
)
def test_malformed_vectors_are_rejected_without_writing(bad, message):
    with pytest.raises(ValueError, match=message):
        vectors_write_chunk(dataset_id=9, chunk_index=0, vectors=bad)
    assert not vectors_chunk_exists(dataset_id=9, chunk_index=0)


def test_loading_with_a_missing_or_wrong_sized_chunk_fails_clearly():
    vectors_write_chunk(dataset_id=11, chunk_index=0, vectors=_unit_vectors(4, seed=6))
    with pytest.raises(FileNotFoundError, match="chunk_1"):
        vectors_load(dataset_id=11, row_count=8, chunk_size=4)
    with pytest.raises(ValueError, match="shape"):  # chunk 0 holds 4 rows, not the 6 this asks for
        vectors_load(dataset_id=11, row_count=6, chunk_size=6)


def test_an_empty_dataset_loads_as_an_empty_matrix():
    loaded = vectors_load(dataset_id=12, row_count=0, chunk_size=4)
    assert loaded.shape == (0, EMBEDDING_DIM) and loaded.dtype == np.float32


def test_loads_are_cached_per_process_until_cleared(monkeypatch):
    vectors = _unit_vectors(6, seed=7)
    _write_dataset(13, vectors, chunk_size=4)
    first = vectors_load(dataset_id=13, row_count=6, chunk_size=4)

    def no_reads(*args, **kwargs):
        raise AssertionError("read storage although the vectors were cached")

    monkeypatch.setattr(embeddings, "_read_chunk", no_reads)
    assert vectors_load(dataset_id=13, row_count=6, chunk_size=4) is first
    # The shared array cannot be modified by one caller behind the others' backs.
    with pytest.raises(ValueError):
        first[0, 0] = 1.0

    vectors_cache_clear(dataset_id=13)
    with pytest.raises(AssertionError, match="read storage"):
        vectors_load(dataset_id=13, row_count=6, chunk_size=4)


def test_cache_keeps_only_the_most_recently_used_datasets(monkeypatch):
    for dataset_id in range(20, 26):
        vectors_write_chunk(dataset_id=dataset_id, chunk_index=0, vectors=_unit_vectors(2, seed=dataset_id))
    loaded = {dataset_id: vectors_load(dataset_id=dataset_id, row_count=2, chunk_size=4) for dataset_id in range(20, 26)}
    reads = []
    original = embeddings._read_chunk
    monkeypatch.setattr(embeddings, "_read_chunk", lambda storage, name: reads.append(name) or original(storage, name))

    assert vectors_load(dataset_id=25, row_count=2, chunk_size=4) is loaded[25]
    assert reads == []
    vectors_load(dataset_id=20, row_count=2, chunk_size=4)  # evicted by the four loaded after it
    assert reads == ["vectors/dataset_20/chunk_0.npy"]


def test_delete_removes_every_chunk_of_that_dataset_only():
    _write_dataset(30, _unit_vectors(6, seed=8), chunk_size=4)
    _write_dataset(31, _unit_vectors(3, seed=9), chunk_size=4)
    vectors_load(dataset_id=30, row_count=6, chunk_size=4)

    vectors_delete(dataset_id=30)
    assert not vectors_chunk_exists(dataset_id=30, chunk_index=0)
    assert not vectors_chunk_exists(dataset_id=30, chunk_index=1)
    assert not os.path.exists(default_storage.path("vectors/dataset_30"))
    with pytest.raises(FileNotFoundError):  # not served from the cache either
        vectors_load(dataset_id=30, row_count=6, chunk_size=4)
    assert vectors_chunk_exists(dataset_id=31, chunk_index=0)
    vectors_delete(dataset_id=30)  # deleting again is a no-op
    vectors_delete(dataset_id=999)


def test_object_storage_without_local_paths_round_trips_and_overwrites(settings):
    """S3-like backends have no .path(): chunks are uploaded whole and replaced, not renamed aside."""
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {"BACKEND": "django.core.files.storage.InMemoryStorage"},
    }
    from django.core.files.storage import default_storage as object_storage

    first, second = _unit_vectors(4, seed=10), _unit_vectors(3, seed=11)
    vectors_write_chunk(dataset_id=40, chunk_index=0, vectors=first)
    vectors_write_chunk(dataset_id=40, chunk_index=1, vectors=second)
    vectors_write_chunk(dataset_id=40, chunk_index=1, vectors=second)
    assert object_storage.listdir("vectors/dataset_40")[1] == ["chunk_0.npy", "chunk_1.npy"]
    loaded = vectors_load(dataset_id=40, row_count=7, chunk_size=4)
    assert np.allclose(loaded, np.vstack([first, second]), atol=5e-4)

    assert not os.path.exists(object_storage.path("vectors/dataset_40/chunk_0.npy"))  # nothing went to disk
    vectors_delete(dataset_id=40)
    assert not vectors_chunk_exists(dataset_id=40, chunk_index=0)
    assert not vectors_chunk_exists(dataset_id=40, chunk_index=1)


def test_gather_returns_the_wanted_rows_in_float16_from_storage_or_cache_without_filling_the_cache():
    vectors = _unit_vectors(11, seed=8)
    _write_dataset(50, vectors, chunk_size=4)  # chunks of 4, 4 and 3 rows
    rows = np.array([1, 2, 8, 10])  # none from the second chunk
    from_storage = vectors_gather(dataset_id=50, row_count=11, chunk_size=4, rows=rows)
    assert from_storage.dtype == np.float16 and from_storage.shape == (4, EMBEDDING_DIM)
    np.testing.assert_allclose(from_storage, vectors[rows], atol=5e-4)
    assert not embeddings._vector_cache  # a one-off read over a big dataset must not pin 1.5 GB of float32

    cached = vectors_load(dataset_id=50, row_count=11, chunk_size=4)
    np.testing.assert_array_equal(vectors_gather(dataset_id=50, row_count=11, chunk_size=4, rows=rows),
                                  cached[rows].astype(np.float16))
    assert vectors_gather(dataset_id=50, row_count=11, chunk_size=4, rows=np.array([], dtype=np.int64)).shape == (0, EMBEDDING_DIM)
    for bad in ([3, 2], [1, 1], [11], [-1]):
        with pytest.raises(ValueError):
            vectors_gather(dataset_id=50, row_count=11, chunk_size=4, rows=np.array(bad))


def test_gather_needs_only_the_chunks_holding_its_rows():
    vectors = _unit_vectors(8, seed=9)
    _write_dataset(51, vectors, chunk_size=4)
    default_storage.delete(embeddings.vector_chunk_name(51, 1))
    np.testing.assert_allclose(vectors_gather(dataset_id=51, row_count=8, chunk_size=4, rows=np.array([0, 3])),
                               vectors[[0, 3]], atol=5e-4)
    with pytest.raises(FileNotFoundError, match="chunk_1"):
        vectors_gather(dataset_id=51, row_count=8, chunk_size=4, rows=np.array([0, 5]))
