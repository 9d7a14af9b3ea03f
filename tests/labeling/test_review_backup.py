"""A workspace backup keeps the team's state: records in conflict, lead decisions, overlap settings and the
overlap records waiting in the queue come back as they were."""
from __future__ import annotations

import io

import pytest
from django.core.management import call_command

from labeling.models import Annotation, Record, Recommendation
from labeling.queue import labels_submit, queue_recompute
from labeling.review import review_decide
from models_app.models import ClassificationModel
from tests.factories import make_user
from tests.training.helpers import fresh_caches, random_setup  # noqa: F401  (fixture)

pytestmark = pytest.mark.django_db(transaction=True)


def test_conflicts_decisions_and_overlap_survive_export_and_import(workspace, lead_user, tmp_path):
    model, _ = random_setup(workspace, n=200)
    ClassificationModel.objects.filter(pk=model.pk).update(overlap_share=0.2, overlap_annotators=2)
    model.refresh_from_db()
    queue_recompute(model=model)
    ann, bob = (make_user(workspace, "annotator", username=name) for name in ("ann", "bob"))
    conflicted, decided, waiting = sorted(Recommendation.objects.filter(model=model, required_annotations=2)
                                          .values_list("record_id", flat=True)[:3])
    labels_submit(model=model, labels=[{"record_id": r, "label": model.labels[0]} for r in (conflicted, decided, waiting)], user=ann)
    labels_submit(model=model, labels=[{"record_id": r, "label": model.labels[1]} for r in (conflicted, decided)], user=bob)
    review_decide(model=model, record_id=decided, label=model.labels[2], user=lead_user)
    rows = {r.row_index: r for r in Record.objects.filter(id__in=[conflicted, decided, waiting])}

    archive = tmp_path / "team.tar.gz"
    call_command("export_workspace", workspace.name, str(archive), stdout=io.StringIO(), stderr=io.StringIO())
    call_command("import_workspace", str(archive), "--rename", "restored", stdout=io.StringIO(), stderr=io.StringIO())

    restored = ClassificationModel.objects.get(workspace__name="restored")
    assert (restored.overlap_share, restored.overlap_annotators) == (0.2, 2)
    copies = {r.row_index: r for r in Record.objects.filter(dataset=restored.dataset, row_index__in=list(rows))}
    by_id = {original.id: copies[row] for row, original in rows.items()}
    assert by_id[conflicted].in_conflict and by_id[conflicted].label is None
    assert not by_id[decided].in_conflict and by_id[decided].label == model.labels[2]
    decision = Annotation.objects.get(record=by_id[decided], adjudicated=True)
    assert decision.is_current and decision.user == lead_user
    assert Annotation.objects.filter(record=by_id[decided], adjudicated=False).count() == 2
    assert Recommendation.objects.get(model=restored, record=by_id[waiting]).required_annotations == 2
