"""Registers each app's router on the one /v2 API object (kept apart from api.py to avoid import cycles)."""
from labelf_studio.api import api
from labeling.api import router as labeling_router
from labeling.duplicates_api import router as duplicates_router
from labeling.queue_api import router as queue_router
from labeling.team_api import router as team_router
from models_app.api import router as models_router
from models_app.evaluation_api import router as evaluation_router
from models_app.label_issue_api import router as label_issues_router

api.add_router("", labeling_router)
api.add_router("", models_router)
api.add_router("", queue_router)
api.add_router("", team_router)
api.add_router("", evaluation_router)
api.add_router("", duplicates_router)
api.add_router("", label_issues_router)
