"""The active-learning loop end to end, with eager Celery, on 200 Banking77 messages and 5 labels:
the queue starts on its own, every 20 labels a new version is trained and evaluated, and the queue is
recomputed from it."""
from __future__ import annotations

import numpy as np
import pytest

from labeling.embeddings import embed_texts
from labeling.models import Annotation, Job, JobKind, JobStatus, Record
from models_app.models import ModelType
from models_app.training_services import learning_curve
from tests.training.helpers import banking77_rows, fresh_caches, make_dataset, make_model  # noqa: F401  (fixture)

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

CATEGORIES = ["card_arrival", "lost_or_stolen_card", "exchange_rate", "cash_withdrawal_charge", "passcode_forgotten"]
PHRASES = ["when will my new card arrive", "my card was lost or stolen", "the exchange rate used",
           "a fee for withdrawing cash", "I forgot my passcode"]


@pytest.fixture
def banking_model(workspace, banking77_dir):
    rows = banking77_rows(banking77_dir, categories=CATEGORIES, per_category=40)
    texts = [text for text, _ in rows]
    dataset = make_dataset(workspace, texts=texts, vectors=embed_texts(texts))
    model = make_model(workspace, dataset, labels=CATEGORIES, label_vectors=embed_texts(PHRASES))
    model.truth = {record_id: rows[row][1] for record_id, row in
                   Record.objects.filter(dataset=dataset).values_list("id", "row_index")}
    return model


def test_labels_every_twenty_train_a_version_and_recompute_the_queue(banking_model, annotator_api,
                                                                     django_capture_on_commit_callbacks):
    model = banking_model
    url = f"/v2/models/{model.id}"
    # Cold start: the first call finds no queue and queues its computation (absorbing repeats).
    with django_capture_on_commit_callbacks(execute=True):
        first = annotator_api.get(f"{url}/recommendations", {"limit": 20}).json()
    assert first["data"] == [] and first["version"] == 1
    assert Job.objects.get(model=model, kind=JobKind.RECOMMEND).status == JobStatus.SUCCEEDED

    versions_seen = []
    for round_number in range(1, 4):
        with django_capture_on_commit_callbacks(execute=True):
            page = annotator_api.get(f"{url}/recommendations", {"limit": 20}).json()
        assert len(page["data"]) == 20
        # The queue was ranked by the newest version: version 1 first, then each retrained one.
        assert page["version"] == round_number
        assert {item["reason"] for item in page["data"]} <= {"uncertain", "diverse", "rare-class", "evaluation"}
        labels = [{"record_id": item["record"]["id"], "label": model.truth[item["record"]["id"]], "duration_ms": 900}
                  for item in page["data"]]
        with django_capture_on_commit_callbacks(execute=True):
            answer = annotator_api.post(f"{url}/labels", {"labels": labels}).json()
        assert answer == {"accepted": 20, "labeled_total": 20 * round_number}
        job = Job.objects.filter(model=model, kind=JobKind.TRAIN).order_by("-id").first()
        assert job.status == JobStatus.SUCCEEDED, job.error
        assert job.result["version"] == round_number + 1 and job.result["model_id"] == model.id
        versions_seen.append(job.result["version"])

    assert versions_seen == [2, 3, 4]
    assert Job.objects.filter(model=model, kind=JobKind.TRAIN).count() == 3
    assert Annotation.objects.filter(model=model).count() == 60

    model.refresh_from_db()
    newest = model.versions.order_by("-number").first()
    assert newest.number == 4 and newest.training_examples == Record.objects.filter(
        dataset=model.dataset, split="pool", label__isnull=False).count()
    evaluation_labels = Record.objects.filter(dataset=model.dataset, split="evaluation", label__isnull=False).count()
    assert evaluation_labels >= 3  # ~10% of the queue are evaluation samples
    assert newest.metrics["evaluation"] == "holdout" and newest.metrics["evaluated_on"] == evaluation_labels

    # 60 labels on 5 well-separated intents: the trained version clearly beats describe-and-classify on
    # the records nobody labeled.
    from models_app.inference import head_for_version
    from labeling.embeddings import vectors_load

    unlabeled = list(Record.objects.filter(dataset=model.dataset, label__isnull=True).values_list("id", "row_index"))
    vectors = vectors_load(dataset_id=model.dataset_id, row_count=200, chunk_size=200)[[row for _, row in unlabeled]]
    gold = np.array([CATEGORIES.index(model.truth[rid]) for rid, _ in unlabeled])
    accuracy = {v.number: float((head_for_version(v).predict_proba(vectors).argmax(axis=1) == gold).mean())
                for v in model.versions.all()}
    assert accuracy[4] >= 0.85 and accuracy[4] > accuracy[1]

    curve = learning_curve(model=model)
    assert [point["version"] for point in curve] == [2, 3, 4]
    assert [point["labels"] for point in curve] == [20, 40, 60]
    assert all(point["accuracy"] is not None and point["f1_macro"] is not None for point in curve)
    stability = newest.details["stability"]
    assert stability["versions"] == [4, 3, 2] and len(stability["kappas"]) == 2
    assert all(-1.0 <= k <= 1.0 for k in stability["kappas"])
    assert model.type == ModelType.ACTIVE_LEARNING  # every label has at least 2 training labels by now


def test_queue_recompute_on_a_partly_labeled_pool_ranks_float16_vectors_predicted_block_by_block(banking_model,
                                                                                                   monkeypatch):
    """The pool's copy of the vectors is float16 (half the memory at 1M rows) and the head predicts it a block
    at a time: the queue must not depend on the block size, and every pool record's probabilities must be
    the head's own."""
    import labeling.queue as queue
    from labeling import sampling
    from labeling.models import Recommendation

    model = banking_model
    labeled = list(Record.objects.filter(dataset=model.dataset).order_by("row_index")[:30])
    for record in labeled:
        record.label = model.truth[record.id]
        record.save(update_fields=["label"])
    seen = {}
    real_rank_pool = sampling.rank_pool

    def spying_rank_pool(**kwargs):
        seen.update(dtype=kwargs["vectors"].dtype, rows=len(kwargs["vectors"]), proba=np.array(kwargs["proba"]))
        return real_rank_pool(**kwargs)

    monkeypatch.setattr(sampling, "rank_pool", spying_rank_pool)

    def queue_now():
        queue.queue_recompute(model=model)
        return list(Recommendation.objects.filter(model=model).order_by("position").values_list("record_id", "reason"))

    whole_blocks = queue_now()
    proba_whole = seen["proba"]
    assert seen["dtype"] == np.float16 and seen["rows"] == 170
    monkeypatch.setattr(queue, "POOL_BLOCK", 7)
    assert queue_now() == whole_blocks
    np.testing.assert_allclose(seen["proba"], proba_whole, rtol=1e-5, atol=1e-7)
    assert len(whole_blocks) == 170 and not {record.id for record in labeled} & {rid for rid, _ in whole_blocks}
