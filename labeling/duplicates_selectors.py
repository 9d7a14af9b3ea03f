"""Reads of a dataset's near-duplicate groups: a page of groups with their records, and the JSON shape."""
from __future__ import annotations

from .models import Record
from .selectors import iso_utc

RECORDS_SHOWN_PER_GROUP = 10


def groups_page(*, scan, offset: int, limit: int, shown: int = RECORDS_SHOWN_PER_GROUP) -> list[dict]:
    """Groups [offset, offset + limit) of a finished scan: index, size, every record id, and the first `shown`
    records with text, label and whether they are excluded (one query for the whole page)."""
    groups = scan.groups[offset:offset + limit] if scan.groups else []
    wanted = [record_id for group in groups for record_id in group[:shown]]
    records = {r.id: r for r in Record.objects.filter(id__in=wanted).only("id", "row_index", "text", "label", "excluded", "split")}
    page = []
    for i, group in enumerate(groups):
        members = [records[record_id] for record_id in group[:shown] if record_id in records]
        page.append({
            "index": offset + i, "size": len(group), "record_ids": list(group),
            "records": [{"id": r.id, "row_index": r.row_index, "text": r.text, "label": r.label, "excluded": r.excluded, "split": r.split}
                        for r in members],
            "excluded": _excluded_count(group) if len(group) > shown else sum(1 for r in members if r.excluded),
        })
    return page


def _excluded_count(record_ids: list[int], batch: int = 5000) -> int:
    # Bounded IN lists: one group of a large dataset can hold more ids than SQLite takes in one statement.
    return sum(Record.objects.filter(id__in=record_ids[start:start + batch], excluded=True).count()
               for start in range(0, len(record_ids), batch))


def scan_to_dict(scan) -> dict:
    return {"dataset_id": scan.dataset_id, "threshold": float(scan.threshold), "status": scan.status,
            "progress": round(scan.progress, 4), "error": scan.error, "method": scan.method or None,
            "group_count": len(scan.groups or []), "duplicate_records": scan.duplicate_records,
            "created_at": iso_utc(scan.created_at), "finished_at": iso_utc(scan.finished_at)}
