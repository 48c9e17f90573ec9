# The image of `vectorizer connector` and `vectorizer worker` (see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# Metadata first: the dependency layer is rebuilt only when pyproject.toml changes.
COPY pyproject.toml README.md ./
COPY connector ./connector
COPY processors ./processors
COPY pgai_orm ./pgai_orm
COPY infra ./infra
RUN pip install . \
 && useradd --create-home --uid 10001 vectorizer

# faust keeps its (memory-store) data under the temp dir; nothing else is written.
USER vectorizer
CMD ["vectorizer", "--help"]
