"""Builds the fast embedding backend from the packaged weights (once) so the first request does not wait."""
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Export and quantise the packaged sentence-embedding model for fast CPU inference (idempotent)."

    def handle(self, *args, **options):
        try:
            from labeling.embeddings import prepare_embedder
        except ImportError:
            self.stdout.write("embedder: nothing to prepare")
            return
        path = prepare_embedder(progress=lambda message: self.stdout.write(message))
        self.stdout.write(f"embedder ready: {path}")
