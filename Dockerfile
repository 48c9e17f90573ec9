# The image of `vectorizer connector` and `vectorizer worker` (see docker-compose.yml).
#
# EXTRAS picks what is installed beyond the base (pyproject.toml): the connector and the worker,
# and the embedders your vectorizers use: local (the offline wordllama model), openai, litellm.
#   docker build --build-arg EXTRAS=pipeline,openai .
FROM python:3.11-slim

ARG EXTRAS=pipeline,local,openai
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# Dependencies first, from the metadata alone, with empty packages standing in for the code:
# this layer is rebuilt only when pyproject.toml (or EXTRAS) changes, not on every code change.
COPY pyproject.toml README.md ./
RUN mkdir -p connector processors pgai_orm infra \
 && touch connector/__init__.py processors/__init__.py pgai_orm/__init__.py infra/__init__.py \
 && pip install ".[${EXTRAS}]" \
 && pip uninstall --yes pg-stream-vectorizer \
 && rm -rf connector processors pgai_orm infra build *.egg-info

# The code: only this layer changes with it (no dependency is resolved again).
COPY connector ./connector
COPY processors ./processors
COPY pgai_orm ./pgai_orm
COPY infra ./infra
RUN pip install --no-deps . \
 && useradd --create-home --uid 10001 vectorizer

# faust keeps its (memory-store) data under the temp dir; nothing else is written.
USER vectorizer
EXPOSE 9100 9101
CMD ["vectorizer", "--help"]
