# driftgate: the gateway (`serve`, ports 8001 gRPC and 8002 metrics) and the monitor sidecar
# (`monitor`, ports 8003 gRPC and 8004 metrics) in one image; the command picks the process.
#
#   docker build -t driftgate .
#   docker run -v "$PWD/models:/models" -p 8001:8001 -p 8002:8002 driftgate serve
#
# The install steps are the README's and CI's: the lock file, then the package without
# dependencies. The PostgreSQL driver and obstore (an s3:// repository) are pinned by the dev
# lock file, the one CI tests the store against PostgreSQL and the repository against an S3
# server with.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/driftgate/bin:$PATH
WORKDIR /src
RUN python -m venv /opt/driftgate
COPY requirements.lock requirements-dev.lock ./
RUN pip install -r requirements.lock \
    && awk '/^(psycopg(-binary)?|obstore)==/{p=1} p{print} p&&!/\\$/{p=0}' requirements-dev.lock \
        > extras.txt \
    && pip install --no-deps -r extras.txt
COPY pyproject.toml README.md ./
COPY driftgate ./driftgate
COPY gateway ./gateway
COPY converter ./converter
COPY monitor ./monitor
RUN pip install --no-deps .

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/driftgate/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DRIFTGATE_REPOSITORY=/models \
    DRIFTGATE_DATA_DIR=/data
RUN groupadd --system --gid 10001 driftgate \
    && useradd --system --uid 10001 --gid driftgate --no-create-home --home-dir /data driftgate \
    && mkdir -p /models /data \
    && chown driftgate:driftgate /models /data
COPY --from=build /opt/driftgate /opt/driftgate
USER 10001:10001
WORKDIR /data
VOLUME ["/models", "/data"]
EXPOSE 8001 8002 8003 8004
# The gateway's health; a monitor container overrides it with --address localhost:8003
# (deploy/compose.yaml does).
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["driftgate", "health", "--address", "localhost:8001"]
ENTRYPOINT ["driftgate"]
CMD ["serve"]
