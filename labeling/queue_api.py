"""/v2 recommendations, labels and training requests."""
from ninja import Router

router = Router(tags=["labeling"])
