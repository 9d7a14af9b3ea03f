"""/v2 version comparison and evaluation details."""
from ninja import Router

router = Router(tags=["evaluation"])
