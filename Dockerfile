# syntax=docker/dockerfile:1
#
# Images of the adstream host and the adgen generator; docker-compose.yml builds and runs both.
# By hand (BuildKit, the default builder since Docker 23):
#
#   docker build -t adstream .                    # the host (last stage): ENTRYPOINT adstream, CMD run
#   docker build --target generator -t adgen .    # the generator: ENTRYPOINT adgen
#
# The aggregation plugins (.wasm) are not in the images: build them on the host machine with
# `bash scripts/build-plugins.sh` and mount target/plugins (see docker-compose.yml).

# ---- build: the release binaries of the adstream and adgen packages ----
FROM rust:1-bookworm AS builder
# rdkafka-sys compiles librdkafka from source with its own configure script and make (C and C++);
# python3 lets it generate the linker script; zlib and OpenSSL (TLS, SASL/SCRAM) are found with
# pkg-config and linked dynamically; zstd is compiled in.
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential pkg-config zlib1g-dev libssl-dev python3 perl \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The toolchain pinned in rust-toolchain.toml (rustup reads the file); its own layer, so that a source
# change does not download it again.
COPY rust-toolchain.toml ./
RUN rustup toolchain install && rustc --version && cargo --version
COPY . .
# The registry and target/ live in BuildKit cache mounts, so a rebuild only compiles what changed; the
# binaries are copied out of the cache mount into the image layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p adstream -p adgen \
 && mkdir -p /out \
 && cp target/release/adstream target/release/adgen /out/

# ---- runtime: both binaries on Debian slim, as a non-root user ----
FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates zlib1g libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --create-home --home-dir /home/adstream adstream \
 && mkdir -p /plugins /cache \
 && chown adstream:adstream /cache
COPY --from=builder /out/adstream /out/adgen /usr/local/bin/
USER adstream
WORKDIR /home/adstream
# Compiled plugins are cached here (a volume in docker-compose.yml).
ENV ADSTREAM_PLUGIN_CACHE=/cache
ENTRYPOINT ["adstream"]
CMD ["run"]

# ---- generator: the same image, running adgen ----
FROM runtime AS generator
ENTRYPOINT ["adgen"]
CMD ["--help"]

# ---- host (the default target): adstream run; plugins under /plugins, port 8081 for the web console ----
FROM runtime AS host
EXPOSE 8081
ENTRYPOINT ["adstream"]
CMD ["run"]
