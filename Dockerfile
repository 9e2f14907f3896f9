# The kubemill operator image: `kubemill operator` (the Helm chart's Deployment) and `kubemill trigger` (the
# CronJobs of Schedules). Build from the repository root:
#   docker build -t ghcr.io/kubemill/operator:0.1.0 .
# Runner images are built from runner_images/<language>/ (see README.md, "Run on kind").
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG NODE_IMAGE=node:20-bookworm-slim

# The web UI's bundle (`kubemill ui` serves it from the package).
FROM ${NODE_IMAGE} AS ui
WORKDIR /src/ui
COPY ui/package.json ui/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY ui/ ./
RUN npm run build

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
RUN python -m venv /opt/kubemill
COPY pyproject.toml README.md ./
COPY operator/ operator/
COPY --from=ui /src/operator/kubemill/ui/static/ operator/kubemill/ui/static/
RUN /opt/kubemill/bin/pip install --no-cache-dir ./

FROM ${PYTHON_IMAGE}
COPY --from=build /opt/kubemill /opt/kubemill
# A passwd entry for the non-root uid (Kopf and getpass look the user up).
RUN useradd --uid 65532 --user-group --no-create-home --home-dir /tmp --shell /usr/sbin/nologin kubemill
# The root filesystem is read-only in the pod; /tmp is an emptyDir.
ENV PATH=/opt/kubemill/bin:$PATH HOME=/tmp PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
USER 65532:65532
WORKDIR /tmp
# /metrics, /healthz, the approvals admission webhook
EXPOSE 8080 8081 9443
ENTRYPOINT ["kubemill"]
CMD ["operator"]
