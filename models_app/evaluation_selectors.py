"""Reads for the evaluation, threshold, calibration and comparison pages and their /v2 endpoints.

Everything here starts from what a version stored when it was made (`metrics`, `threshold_curve`,
`details`) and, where a page needs per-record answers (the records behind a confusion-matrix cell,
calibration, pairing two versions for McNemar's test), from that version's predictions on the dataset's
labeled evaluation records, computed from the stored vectors with the version's own head. Those
predictions are cached per process by (version, its checksum, the evaluation rows), so moving between
pages does not recompute them, and a new evaluation label (a different row set) does.
"""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from labeling.models import Dataset, Record, Split

from .ml.calibration import apply_temperature, expected_calibration_error, reliability_diagram
from .ml.compare import LabelSetMismatch, compare_versions
from .ml.thresholds import threshold_curve, threshold_for_target
from .models import ClassificationModel, ModelVersion

# Prediction matrices kept per process; each is (evaluation records x labels) float64, a few MB at most.
MAX_CACHED_PREDICTIONS = 16
# Records listed under one confusion-matrix cell or as disagreements; the counts are always complete.
MAX_LISTED_RECORDS = 200
RELIABILITY_BINS = 10

_predictions: OrderedDict[tuple, np.ndarray] = OrderedDict()
_predictions_lock = threading.Lock()


@dataclass(frozen=True)
class EvaluationSet:
    """The dataset's labeled evaluation records in one label set, in row order."""

    record_ids: list[int]
    rows: list[int]
    gold: list[str]

    def __len__(self) -> int:
        return len(self.rows)

    def gold_indices(self, labels: list[str]) -> np.ndarray:
        index = {label: i for i, label in enumerate(labels)}
        return np.fromiter((index[label] for label in self.gold), dtype=np.int64, count=len(self.gold))


def evaluation_set(*, dataset_id: int, labels: list[str]) -> EvaluationSet:
    """One query: the records a version is measured on (split evaluation, labeled with one of `labels`)."""
    rows = list(Record.objects.filter(dataset_id=dataset_id, split=Split.EVALUATION, label__in=labels)
                .order_by("row_index").values_list("id", "row_index", "label"))
    return EvaluationSet(record_ids=[r[0] for r in rows], rows=[r[1] for r in rows], gold=[r[2] for r in rows])


def clear_predictions_cache() -> None:
    with _predictions_lock:
        _predictions.clear()


def _texts(record_ids: list[int]) -> list[str]:
    texts = dict(Record.objects.filter(id__in=record_ids).values_list("id", "text"))
    return [texts[record_id] for record_id in record_ids]


def version_proba(*, version: ModelVersion, dataset_id: int, records: EvaluationSet) -> np.ndarray:
    """The version's probabilities on `records` (columns in `version.labels` order), from the stored vectors."""
    from labeling.embeddings import vectors_load

    from .inference import head_for_version

    if not len(records):
        return np.zeros((0, len(version.labels)))
    digest = hashlib.sha256(np.asarray(records.rows, dtype=np.int64).tobytes()).hexdigest()
    key = (version.id, version.checksum, dataset_id, digest)
    with _predictions_lock:
        cached = _predictions.get(key)
        if cached is not None:
            _predictions.move_to_end(key)
            return cached
    dataset = Dataset.objects.only("id", "record_count", "vector_chunk_size").get(pk=dataset_id)
    vectors = vectors_load(dataset_id=dataset.id, row_count=dataset.record_count, chunk_size=dataset.vector_chunk_size)
    # Heads that read the texts (fine-tuned n-grams) need them; the others ignore them.
    proba = np.asarray(head_for_version(version).predict_proba(vectors[records.rows], _texts(records.record_ids)),
                       dtype=np.float64)
    proba.setflags(write=False)
    with _predictions_lock:
        _predictions[key] = proba
        while len(_predictions) > MAX_CACHED_PREDICTIONS:
            _predictions.popitem(last=False)
    return proba


# --- metrics and the confusion matrix ---------------------------------------------------------------

def measured_on(metrics: dict | None) -> str:
    """What the metrics were computed on, in words."""
    if not metrics:
        return "not measured: no evaluation labels and too few training labels to cross-validate"
    if metrics.get("evaluation") == "holdout":
        return f"holdout: {metrics['evaluated_on']} evaluation labels never trained on"
    return f"cross-validation: no evaluation split yet (out-of-fold predictions on {metrics['evaluated_on']} training labels)"


def trained_on(version: ModelVersion) -> str | None:
    """How a trained version learned, in words: its labels, and for a self-trained fine-tuned version the
    unlabeled records it pseudo-labeled (None for a describe-and-classify version)."""
    details = version.details or {}
    if "training" not in details:
        return None
    words = f"{version.training_examples} training labels"
    self_training = (details.get("head") or {}).get("self_training")
    if self_training and self_training.get("kept", True):
        words += (f", plus {self_training['pseudo_labels']} of {self_training['pool']} sampled unlabeled records that a "
                  f"first model trained on those labels gave at least {self_training['confidence']:.0%} confidence "
                  f"(self-training)")
    elif self_training:
        words += (f" only: self-training on {self_training['pool']} sampled unlabeled records was tried and dropped, "
                  f"because it made the cross-validated predictions significantly worse")
    return words


def per_class_rows(metrics: dict | None) -> list[dict]:
    if not metrics:
        return []
    return [{"label": label, **row, "no_support": bool(row.get("no_support")) or not row.get("support")}
            for label, row in metrics.get("per_class", {}).items()]


def heatmap(metrics: dict | None) -> dict | None:
    """The confusion matrix as table rows; each cell's share of its gold row drives its colour."""
    if not metrics or "confusion_matrix" not in metrics:
        return None
    labels = metrics["confusion_matrix"]["labels"]
    rows = []
    for gold, counts in zip(labels, metrics["confusion_matrix"]["matrix"]):
        total = sum(counts)
        cells = []
        for predicted, count in zip(labels, counts):
            share = count / total if total else 0.0
            cells.append({"predicted": predicted, "count": count, "share": share, "correct": gold == predicted,
                          "alpha": round(0.08 + 0.82 * share, 3) if count else 0.0, "dark": share > 0.55})
        rows.append({"gold": gold, "total": total, "cells": cells})
    return {"labels": labels, "rows": rows, "linked": metrics.get("evaluation") == "holdout"}


# --- thresholds -----------------------------------------------------------------------------------------

def curve_for_version(*, version: ModelVersion, records: EvaluationSet | None = None) -> tuple[list | None, str]:
    """The version's threshold curve and where it came from. A version that stored none (describe-and-classify
    versions do not) gets one computed once from its predictions on the evaluation records."""
    if version.threshold_curve:
        return version.threshold_curve, "stored with the version when it was measured"
    records = records if records is not None else evaluation_set(dataset_id=version.model.dataset_id, labels=version.labels)
    if not len(records):
        return None, "no curve: this version stored none and there are no evaluation labels to compute one on"
    proba = version_proba(version=version, dataset_id=version.model.dataset_id, records=records)
    curve = threshold_curve(y_true=records.gold_indices(version.labels), proba=proba)
    return curve, f"computed from this version's predictions on the {len(records)} evaluation records"


def point_at(curve: list[dict], threshold: float) -> dict | None:
    """The curve's point at the largest listed threshold not above `threshold` (the slider's rule too)."""
    best = None
    for point in sorted(curve, key=lambda p: p["threshold"]):
        if point["threshold"] <= threshold + 1e-9:
            best = point
    return best


def threshold_answer(curve: list[dict] | None, *, min_precision: float) -> dict:
    """`threshold_for_target` as the API answers it: nulls when the target is unreachable."""
    found = threshold_for_target(curve, min_precision=min_precision) if curve else None
    if found is None:
        return {"threshold": None, "precision": None, "coverage": None, "recall": None}
    return found


# --- calibration ------------------------------------------------------------------------------------------

def calibration(*, version: ModelVersion, records: EvaluationSet) -> dict:
    """Reliability diagram and ECE of the version on the evaluation records; before/after when the training
    job calibrated the head (a temperature in `details["head"]`), otherwise the version's probabilities as they are."""
    head_details = (version.details or {}).get("head") or {}
    stored = head_details.get("calibration")
    temperature = head_details.get("temperature")
    result = {"evaluated_on": len(records), "stored": stored, "temperature": temperature,
              "before": None, "after": None, "calibrated": bool(stored and temperature)}
    if not len(records):
        return result
    gold = records.gold_indices(version.labels)
    proba = version_proba(version=version, dataset_id=version.model.dataset_id, records=records)
    result["after"] = {"ece": expected_calibration_error(gold, proba),
                       "diagram": reliability_diagram(gold, proba, bins=RELIABILITY_BINS)}
    if result["calibrated"]:
        # The head divides its scores by T before the softmax; scaling the log-probabilities by 1/T undoes it.
        raw = apply_temperature(proba, 1.0 / float(temperature), logits=False)
        result["before"] = {"ece": expected_calibration_error(gold, raw),
                            "diagram": reliability_diagram(gold, raw, bins=RELIABILITY_BINS)}
    return result


# --- the evaluation page -------------------------------------------------------------------------------------

def version_for_page(*, model: ClassificationModel, number: int | None) -> ModelVersion | None:
    from .selectors import shown_version, version_get

    version = shown_version(model) if number is None else version_get(model=model, number=number)
    if version is not None:
        version.model = model  # spares a query wherever the version's model is read
    return version


def evaluation_page(*, model: ClassificationModel, version: ModelVersion) -> dict:
    """Everything the evaluation page shows, in a fixed number of queries (plus two on a prediction-cache miss)."""
    metrics = version.metrics
    records = evaluation_set(dataset_id=model.dataset_id, labels=version.labels)
    curve, curve_source = curve_for_version(version=version, records=records)
    current = point_at(curve, model.confidence_threshold) if curve else None
    stale = bool(metrics and metrics.get("evaluation") == "holdout" and metrics["evaluated_on"] != len(records))
    return {
        "model": model, "version": version, "metrics": metrics, "measured_on": measured_on(metrics),
        "trained_on": trained_on(version), "per_class": per_class_rows(metrics), "heatmap": heatmap(metrics),
        "versions": list(model.versions.order_by("-number").values("number", "type", "created_at")),
        "evaluation_count": len(records), "stale": stale,
        "curve": curve, "curve_source": curve_source, "current_point": current,
        "calibration": calibration(version=version, records=records),
    }


def confusion_cell(*, model: ClassificationModel, version: ModelVersion, gold: str, predicted: str) -> dict:
    """The evaluation records labeled `gold` that the version predicts as `predicted`, with their texts."""
    records = evaluation_set(dataset_id=model.dataset_id, labels=version.labels)
    proba = version_proba(version=version, dataset_id=model.dataset_id, records=records)
    predicted_index = version.labels.index(predicted)
    top = proba.argmax(axis=1) if len(records) else np.zeros(0, dtype=np.int64)
    positions = [i for i in range(len(records)) if records.gold[i] == gold and top[i] == predicted_index]
    shown = positions[:MAX_LISTED_RECORDS]
    texts = _texts([records.record_ids[i] for i in shown])
    rows = [{"id": records.record_ids[i], "row_index": records.rows[i], "text": text, "gold": gold, "predicted": predicted,
             "confidence": float(proba[i, predicted_index])} for i, text in zip(shown, texts)]
    return {"model": model, "version": version, "gold": gold, "predicted": predicted, "records": rows,
            "count": len(positions), "evaluation_count": len(records)}


# --- comparing two versions ------------------------------------------------------------------------------------

class NotComparable(ValueError):
    """The two versions cannot be paired on the same evaluation records (the message says why)."""


def label_set_mismatch(a: ModelVersion, b: ModelVersion, name_a: str, name_b: str) -> str | None:
    only_a, only_b = sorted(set(a.labels) - set(b.labels)), sorted(set(b.labels) - set(a.labels))
    if not only_a and not only_b:
        return None
    parts = [f"{owner} has {', '.join(extra[:10])}{' …' if len(extra) > 10 else ''} that {other} lacks"
             for owner, other, extra in ((name_a, name_b, only_a), (name_b, name_a, only_b)) if extra]
    return ("the versions classify into different label sets, so their predictions cannot be paired record by "
            f"record: {'; '.join(parts)}")


def learning_curve(*, model: ClassificationModel) -> list[dict]:
    """One point per measured version: labels trained on against accuracy and macro-F1."""
    rows = (model.versions.order_by("number")
            .values_list("number", "type", "training_examples", "metrics__accuracy", "metrics__f1_macro"))
    return [{"version": number, "type": kind, "training_examples": examples, "accuracy": accuracy, "f1_macro": f1}
            for number, kind, examples, accuracy, f1 in rows if accuracy is not None]


def _side(model: ClassificationModel, version: ModelVersion) -> dict:
    return {"model_id": model.id, "model_name": model.name, "version": version.number, "type": version.type,
            "training_examples": version.training_examples, "metrics": version.metrics,
            "measured_on": measured_on(version.metrics)}


def comparison(*, model_a: ClassificationModel, version_a: ModelVersion, model_b: ClassificationModel,
               version_b: ModelVersion, include_rows: bool = False) -> dict:
    """Both versions on the shared evaluation records: metrics, per-class F1 deltas, McNemar's test, disagreements.

    Raises NotComparable when the models are on different datasets or the label sets differ."""
    name_a = f"version A ({model_a.name} v{version_a.number})"
    name_b = f"version B ({model_b.name} v{version_b.number})"
    if model_a.dataset_id != model_b.dataset_id:
        raise NotComparable(f"{name_a} and {name_b} belong to models on different datasets, so they share no "
                            "evaluation records; compare models on the same dataset")
    mismatch = label_set_mismatch(version_a, version_b, name_a, name_b)
    if mismatch:
        raise NotComparable(mismatch)
    labels = list(version_a.labels)
    records = evaluation_set(dataset_id=model_a.dataset_id, labels=labels)
    proba_a = version_proba(version=version_a, dataset_id=model_a.dataset_id, records=records)
    proba_b = version_proba(version=version_b, dataset_id=model_b.dataset_id, records=records)
    # B's columns in A's label order, so column j means the same label on both sides.
    proba_b = proba_b[:, [version_b.labels.index(label) for label in labels]]
    try:
        result = compare_versions(labels=labels, y_true=records.gold, proba_a=proba_a, proba_b=proba_b,
                                  metrics_a=version_a.metrics, metrics_b=version_b.metrics)
    except LabelSetMismatch as exc:  # the stored metrics name another label set than the versions do
        raise NotComparable(str(exc)) from None
    shared = len(records)
    predictions_a, predictions_b = proba_a.argmax(axis=1), proba_b.argmax(axis=1)
    disagreements = {**result["disagreements"],
                     "predictions_differ": int((predictions_a != predictions_b).sum()) if shared else 0}
    if shared:
        mcnemar, p_value, verdict = result["mcnemar"], result["mcnemar"]["p_value"], result["verdict"]
        per_class = result["per_class"]
    else:
        mcnemar, p_value = None, None
        verdict = ("No shared evaluation records: label some records for evaluation (split evaluation) "
                   "to compare the two versions record by record.")
        per_class = {label: {"f1_a": None, "f1_b": None, "delta": None, "support": 0} for label in labels}
    answer = {
        "labels": labels, "a": _side(model_a, version_a), "b": _side(model_b, version_b),
        "shared": result["shared"], "per_class": per_class, "mcnemar": mcnemar, "p_value": p_value,
        "verdict": verdict, "disagreements": disagreements,
    }
    if include_rows:
        wrong = sorted(set().union(*(result["disagreement_rows"][key] for key in result["disagreement_rows"])))
        shown = wrong[:MAX_LISTED_RECORDS]
        texts = _texts([records.record_ids[i] for i in shown])
        answer["rows"] = [{"id": records.record_ids[i], "text": text, "gold": records.gold[i],
                           "predicted_a": labels[predictions_a[i]], "predicted_b": labels[predictions_b[i]],
                           "a_right": labels[predictions_a[i]] == records.gold[i],
                           "b_right": labels[predictions_b[i]] == records.gold[i]}
                          for i, text in zip(shown, texts)]
        answer["rows_total"] = len(wrong)
    return answer
