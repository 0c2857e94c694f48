# syntax=docker/dockerfile:1
# Two images from one build of `lake`:
#   --target lake     (default) the binary on debian-slim: catalog, generate, ingest, …
#   --target airflow  apache/airflow with the same binary, for the DAGs in airflow/dags
#   --target superset apache/superset with the Trino driver (compose profile `superset`)
# compose.yaml builds them.

ARG RUST_VERSION=1.95
ARG DEBIAN=bookworm
ARG AIRFLOW_VERSION=3.3.2
ARG SUPERSET_VERSION=5.0.0

FROM rust:${RUST_VERSION}-${DEBIAN} AS build
# librdkafka, zstd and aws-lc are built from source by their -sys crates (make, cmake,
# a C/C++ compiler); librdkafka's TLS comes from the system OpenSSL.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential cmake libssl-dev pkg-config perl python3 \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# Cache mounts keep the registry and target dir between builds; the binary is
# copied out because the target mount does not persist into the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p lake-cli \
    && install -m 0755 target/release/lake /usr/local/bin/lake

FROM apache/airflow:${AIRFLOW_VERSION} AS airflow
COPY --from=build /usr/local/bin/lake /usr/local/bin/lake

FROM apache/superset:${SUPERSET_VERSION} AS superset
# The image ships no database drivers; Trino's goes into Superset's own venv, at the
# version tests/python/superset-requirements.txt pins for the Superset test.
USER root
RUN . /app/.venv/bin/activate && (uv pip install --no-cache trino==0.340.0 || pip install --no-cache-dir trino==0.340.0)
USER superset

# Last, so that a plain `docker build .` makes the lake image.
FROM debian:${DEBIAN}-slim AS lake
# ca-certificates for TLS to S3 and catalogs; libssl3 for librdkafka's TLS;
# curl for healthchecks against /metrics.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libssl3 curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --create-home --home-dir /var/lib/lake lake
COPY --from=build /usr/local/bin/lake /usr/local/bin/lake
COPY catalog/lake.toml /etc/lake/lake.toml
USER lake
WORKDIR /var/lib/lake
ENTRYPOINT ["lake"]
CMD ["--help"]
