"""/v2 datasets, records, similarity, jobs, recommendations and labels."""
from ninja import Router

router = Router(tags=["datasets"])
