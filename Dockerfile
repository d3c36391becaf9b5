# syntax=docker/dockerfile:1
# The Konductor operator image (distribution konductor-sdk; entrypoint konductor-operator).
#
#   docker buildx build -t konductor-operator \
#     --build-arg SOURCE_DATE_EPOCH=$(git log -1 --pretty=%ct) \
#     --output type=image,rewrite-timestamp=true .
#
# Reproducible and pinned:
# * the base image is pinned by digest (a multi-arch index); refresh it deliberately with
#   `crane digest python:3.11-slim` (or `docker buildx imagetools inspect`) and change both
#   FROM lines together;
# * every Python dependency comes from requirements.lock (`make lock`: pip-compile
#   --generate-hashes) and is installed with --require-hashes; the build tools of the build
#   stage from requirements-build.lock the same way; nothing is resolved at build time;
# * SOURCE_DATE_EPOCH fixes the file times in the wheel (and, with rewrite-timestamp, in
#   the layers); bytecode is compiled with unchecked hashes, not timestamps; pip keeps no
#   cache.
# tests/unit/test_dockerfile.py checks all of this statically (no Docker engine runs where
# the tests run).
FROM python:3.11-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7 AS build
ARG SOURCE_DATE_EPOCH=0
ENV SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY requirements-build.lock ./
RUN python -m venv /opt/build \
 && /opt/build/bin/pip install --no-cache-dir --require-hashes --only-binary=:all: \
      -r requirements-build.lock
# Only what the package needs (konductor_sdk/crds and konductor_operator/policies are
# symlinks to ../crds and ../policies).
COPY pyproject.toml README.md ./
COPY crds ./crds
COPY policies ./policies
COPY konductor_sdk ./konductor_sdk
COPY konductor_operator ./konductor_operator
RUN /opt/build/bin/pip wheel --no-cache-dir --no-deps --no-build-isolation \
      --wheel-dir /wheels .

FROM python:3.11-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7
ARG SOURCE_DATE_EPOCH=0
ENV SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/konductor/bin:$PATH
COPY requirements.lock /tmp/requirements.lock
COPY --from=build /wheels /tmp/wheels
RUN python -m venv /opt/konductor \
 && /opt/konductor/bin/pip install --no-cache-dir --no-compile --require-hashes \
      --only-binary=:all: -r /tmp/requirements.lock \
 && /opt/konductor/bin/pip install --no-cache-dir --no-compile --no-deps --no-index \
      /tmp/wheels/konductor_sdk-*.whl \
 && /opt/konductor/bin/python -m compileall -q --invalidation-mode unchecked-hash \
      /opt/konductor/lib \
 && rm -rf /tmp/wheels /tmp/requirements.lock
# Non-root, matching deploy/deployment.yaml and the chart (runAsUser 65532, read-only
# root filesystem).
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["konductor-operator"]
