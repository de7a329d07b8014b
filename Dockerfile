# syntax=docker/dockerfile:1
# keptn-metrics: ghcr.io/keptn-metrics/keptn-metrics:0.1.0 (the tag the manifests in deploy/ use)
FROM python:3.11.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY metrics_server ./metrics_server
COPY providers ./providers
COPY apiservice ./apiservice
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --upgrade pip \
 && /opt/venv/bin/pip install '.[all]'

FROM python:3.11.11-slim-bookworm
LABEL org.opencontainers.image.source="https://github.com/keptn-metrics/keptn-metrics" \
      org.opencontainers.image.description="Keptn metrics server in Python" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=build /opt/venv /opt/venv
# distroless-style non-root user; the root filesystem is read-only in the cluster
# (certificates go to the /tmp emptyDir).
RUN groupadd --gid 65532 nonroot \
 && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin nonroot
USER 65532:65532
EXPOSE 6443 9999 9998
ENTRYPOINT ["keptn-metrics"]
CMD ["serve"]
