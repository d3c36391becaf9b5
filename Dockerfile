# The Konductor operator image: `docker build -t konductor-operator .`
# Two stages: build the wheel with the full toolchain, install it into a clean slim image.
FROM python:3.11-slim AS build
WORKDIR /src
# Only what the package needs (konductor_sdk/crds is a symlink to ../crds).
COPY pyproject.toml README.md ./
COPY crds ./crds
COPY konductor_sdk ./konductor_sdk
COPY konductor_operator ./konductor_operator
RUN pip install --no-cache-dir --upgrade pip \
 && pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
# Non-root, matching deploy/deployment.yaml (runAsUser 65532, read-only root filesystem).
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["konductor-operator"]
