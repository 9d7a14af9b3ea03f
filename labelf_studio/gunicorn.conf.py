"""Gunicorn settings for the web service: the Dockerfile's CMD, docker-compose's `web` and
bench/inference_latency.py all run `gunicorn -c labelf_studio/gunicorn.conf.py labelf_studio.wsgi:application`
from the project folder. (Not at the top level, where gunicorn would read it for every other
invocation too, such as the system tests' servers.)

Environment: GUNICORN_BIND (default 0.0.0.0:8000), WEB_CONCURRENCY (workers, default 2),
GUNICORN_THREADS (threads per worker, default 1); GUNICORN_CMD_ARGS overrides any setting.
"""
import os

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# gthread rather than sync: it keeps client connections alive between requests (sync closes every
# connection, so each API call paid a new TCP handshake), and with one thread per worker a worker
# still serves one request at a time, as sync does.
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "1"))
keepalive = 15
timeout = 60
# Import Django and the app once in the master, so workers start quickly and share those pages.
preload_app = True
# Inference is CPU-bound in onnxruntime. Each worker's embedder spreads a request's runs over the cores
# that are idle (one client: lowest latency) and keeps them in the request's thread when other requests
# keep the cores busy (several clients: no worker's threads queue behind another's); see labeling.embeddings.


def on_starting(server):
    """Export and quantise the embedding model once, in the master, if the model cache lacks it (a
    fresh volume): a worker doing it would outlast its timeout."""
    from labeling.embeddings import prepare_embedder

    prepare_embedder(progress=server.log.info)


def post_fork(server, worker):
    """Load the embedder in each worker before it accepts requests, so no client waits for it.

    onnxruntime sessions are per process (never shared across fork), so this runs in the worker."""
    from labeling.embeddings import embed_texts

    try:
        embed_texts(["warm up"])
    except Exception:  # the first request will report the problem; never keep the worker from starting
        server.log.exception("embedder warm-up failed")
