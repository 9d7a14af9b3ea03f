"""Team agreement at scale: how long `GET /v2/models/{id}/agreement` (team_selectors.agreement_report) takes.

Setup: a fresh PostgreSQL database (labelf_bench_agreement on postgres://postgres@127.0.0.1:5432), migrations,
a workspace with 5 annotators, a dataset of 100,000 records and a model with 10 labels. Every record is labeled
by one annotator and 10% of them (the default overlap share) by a second one, spread over 30 days, each annotator
with their own accuracy against a hidden truth (0.95 ... 0.75), with `duration_ms` as the labeling page sends it:
110,000 annotations. 1% of the overlap records are decided by a lead.

Figures: agreement_report wall time (median of 3) for all time and for the last 7 days, with the numbers it
reports (alpha, the pairwise kappas, labels per hour); the pure part alone (labeling/agreement.py on the same
ratings). The report's kappas are checked against scikit-learn's on the same pairs.

    .venv/bin/python bench/agreement.py

Writes bench/results/agreement.json. The machine (2 cores) may be shared: the load average is recorded.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DB_NAME = "labelf_bench_agreement"
os.environ["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:5432/{DB_NAME}"
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "labelf_studio.settings.base")
os.environ.setdefault("LABELF_VAR_DIR", "/tmp/labelf-bench-agreement")

RECORDS = 100_000
OVERLAP = 0.10
LABELS = [f"intent_{i}" for i in range(10)]
ACCURACY = [0.95, 0.9, 0.85, 0.8, 0.75]


def fresh_database() -> None:
    subprocess.run(["dropdb", "-h", "127.0.0.1", "-U", "postgres", "--if-exists", DB_NAME], check=True)
    subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "postgres", DB_NAME], check=True)


def main() -> None:
    import numpy as np

    fresh_database()
    import django

    django.setup()
    from django.core.management import call_command
    from django.utils import timezone

    call_command("migrate", verbosity=0)
    from django.contrib.auth import get_user_model

    from labeling import agreement
    from labeling.models import Annotation, Dataset, DatasetStatus, Record
    from labeling.team_selectors import agreement_report, window_parse
    from labelf_studio.workspaces.models import Workspace
    from labelf_studio.workspaces.services import membership_set
    from models_app.models import ClassificationModel

    rng = np.random.default_rng(0)
    workspace = Workspace.objects.create(name="bench")
    users = []
    for i in range(len(ACCURACY)):
        user = get_user_model().objects.create_user(username=f"annotator{i}", password="x")
        membership_set(workspace=workspace, user=user, role="annotator")
        users.append(user)
    lead = get_user_model().objects.create_user(username="lead", password="x")
    dataset = Dataset.objects.create(workspace=workspace, name="bench", status=DatasetStatus.READY, record_count=RECORDS)
    Record.objects.bulk_create((Record(dataset=dataset, row_index=i, text=f"message {i}") for i in range(RECORDS)),
                               batch_size=5000)
    model = ClassificationModel.objects.create(workspace=workspace, dataset=dataset, name="bench", labels=LABELS,
                                               label_descriptions={label: "" for label in LABELS})
    record_ids = np.array(Record.objects.filter(dataset=dataset).order_by("row_index").values_list("id", flat=True))
    truth = rng.integers(0, len(LABELS), size=RECORDS)
    first = rng.integers(0, len(users), size=RECORDS)
    overlap = rng.random(RECORDS) < OVERLAP
    second = (first + rng.integers(1, len(users), size=RECORDS)) % len(users)
    now = timezone.now()
    start = now - timedelta(days=30)
    rows = []

    def given(annotator: int, unit: int) -> str:
        if rng.random() < ACCURACY[annotator]:
            return LABELS[truth[unit]]
        return LABELS[rng.integers(0, len(LABELS))]

    # The records are labeled in order over the 30 days (the second opinion up to a day after the first).
    for unit in range(RECORDS):
        when = start + timedelta(days=30) * (unit / RECORDS)
        for k, annotator in enumerate([first[unit], second[unit]] if overlap[unit] else [first[unit]]):
            duration = int(rng.integers(1500, 12000))
            rows.append(Annotation(record_id=int(record_ids[unit]), model=model, user=users[annotator],
                                   label=given(annotator, unit), duration_ms=duration))
            rows[-1]._when = when + timedelta(hours=float(rng.random() * 24) if k else 0)
    created = Annotation.objects.bulk_create(rows, batch_size=5000)
    # created_at is auto_now_add: set it afterwards as the annotators' clocks say, 10,000 rows per statement.
    from django.db import connection

    pairs = [(annotation.id, min(row._when, now)) for annotation, row in zip(created, rows)]
    with connection.cursor() as cursor:
        for i in range(0, len(pairs), 10_000):
            chunk = pairs[i:i + 10_000]
            cursor.execute("UPDATE labeling_annotation a SET created_at = v.t FROM unnest(%s::bigint[], %s::timestamptz[])"
                           " AS v(id, t) WHERE a.id = v.id", [[c[0] for c in chunk], [c[1] for c in chunk]])
    decided = record_ids[np.flatnonzero(overlap)[: int(RECORDS * OVERLAP * 0.01)]]
    Annotation.objects.bulk_create([Annotation(record_id=int(r), model=model, user=lead, label=LABELS[0], adjudicated=True)
                                    for r in decided])
    annotations = Annotation.objects.filter(model=model).count()

    load = os.getloadavg()

    def timed(window) -> tuple[float, dict]:
        times, report = [], None
        for _ in range(3):
            began = time.perf_counter()
            report = agreement_report(model=model, window=window)
            times.append(time.perf_counter() - began)
        return statistics.median(times), report

    all_time, report = timed(window_parse(window="all"))
    week, week_report = timed(window_parse(window="7d"))

    # The pure part alone, and the kappas against scikit-learn on the same pairs.
    from sklearn.metrics import cohen_kappa_score

    ratings: dict = {}
    for record_id, user_id, label in (Annotation.objects.filter(model=model, adjudicated=False)
                                      .values_list("record_id", "user_id", "label").iterator(chunk_size=5000)):
        ratings.setdefault(user_id, {})[record_id] = label
    began = time.perf_counter()
    units = [v for v in agreement.units_of(ratings).values() if len(v) >= 2]
    agreement.krippendorff_alpha(units)
    agreement.pairwise_kappa(ratings)
    agreement.specific_agreement(units)
    pure = time.perf_counter() - began
    names = {u.username: u.id for u in users}
    worst = 0.0
    for pair in report["pairs"]:
        a, b = ratings[names[pair["a"]["name"]]], ratings[names[pair["b"]["name"]]]
        shared = [r for r in a if r in b]
        if len(shared) > 1 and pair["kappa"] is not None:
            worst = max(worst, abs(pair["kappa"] - cohen_kappa_score([a[r] for r in shared], [b[r] for r in shared])))

    results = {
        "what": "agreement_report (GET /v2/models/{id}/agreement) on PostgreSQL",
        "setup": {"records": RECORDS, "annotations": annotations, "annotators": len(users), "overlap_share": OVERLAP,
                  "labels": len(LABELS), "days": 30, "accuracy": ACCURACY, "decided": int(len(decided))},
        "seconds_all_time_median": round(all_time, 3), "seconds_7d_median": round(week, 3),
        "seconds_pure_metrics": round(pure, 3),
        "units": report["units"], "alpha": report["alpha"],
        "kappa": {f'{p["a"]["name"]}-{p["b"]["name"]}': p["kappa"] for p in report["pairs"]},
        "labels_per_hour": {a["annotator"]["name"]: a["labels_per_hour"] for a in report["annotators"]},
        "units_7d": week_report["units"],
        "max_abs_kappa_difference_vs_sklearn": worst,
        "load_average_at_start": load, "machine": platform.platform(), "cpus": os.cpu_count(),
    }
    print(json.dumps(results, indent=2))
    out = ROOT / "bench" / "results" / "agreement.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    connection.close()
    subprocess.run(["dropdb", "-h", "127.0.0.1", "-U", "postgres", "--if-exists", DB_NAME], check=False)


if __name__ == "__main__":
    main()
