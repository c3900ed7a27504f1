# syntax=docker/dockerfile:1
# voxq service image: `voxq-api` and `voxq-worker` in one image; the command picks the
# role (docker-compose.yml runs `voxq-api` and `voxq-worker run`).
#
#   docker build --platform linux/amd64 -t voxq .
#
# linux/amd64 only: Intel publishes the prebuilt oneDNN 3.1 wheels for x86_64 only.
# The first build compiles CTranslate2 (~15 min on 2 cores); the Cargo registry and
# target directory are BuildKit cache mounts, so later builds recompile only what changed.

ARG RUST_VERSION=1.95

# ---------------------------------------------------------------- builder
FROM rust:${RUST_VERSION}-bookworm AS builder
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      cmake g++ pkg-config python3 python3-pip \
 && rm -rf /var/lib/apt/lists/*

# worker/onednn/build.rs links oneDNN from $VOXQ_ONEDNN_DIR and worker/build.rs embeds
# $VOXQ_ONEDNN_DIR/lib as the worker's run-time search path: the runtime stage puts
# libdnnl.so.3 at the same absolute path.
ENV CARGO_TARGET_DIR=/build/target \
    VOXQ_ONEDNN_DIR=/opt/voxq-onednn-3.1.0
WORKDIR /src

# Fetched before the sources are copied, so source changes do not fetch them again.
COPY scripts/fetch-onednn.sh scripts/fetch-model.sh scripts/fetch-vad.sh scripts/
RUN bash scripts/fetch-onednn.sh
RUN bash scripts/fetch-model.sh /models/whisper-tiny.en \
 && bash scripts/fetch-model.sh base /models/whisper-base \
 && bash scripts/fetch-vad.sh /models/silero_vad_v6.onnx

COPY . .
# Only the dev profile (optimised) exists for this repo: never --release (see Cargo.toml).
# The binaries are copied out of the cache-mounted target dir within the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/build/target \
    CMAKE_PARALLEL="$(nproc)" cargo build --locked --workspace --bins \
 && mkdir -p /build/bin \
 && cp /build/target/debug/voxq-api /build/target/debug/voxq-worker /build/target/debug/voxq /build/bin/

# ---------------------------------------------------------------- runtime
FROM debian:bookworm-slim
# libgomp1: oneDNN's GNU OpenMP build; libstdc++6, zlib1g: CTranslate2 and the worker;
# curl: the compose healthcheck of the API (/healthz).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates curl libgomp1 libstdc++6 zlib1g \
 && rm -rf /var/lib/apt/lists/*

COPY --from=builder /opt/voxq-onednn-3.1.0/lib/libdnnl.so.3 /opt/voxq-onednn-3.1.0/lib/
COPY --from=builder /models/whisper-tiny.en /models/whisper-tiny.en
COPY --from=builder /models/whisper-base /models/whisper-base
COPY --from=builder /models/silero_vad_v6.onnx /models/silero_vad_v6.onnx
COPY --from=builder /build/bin/voxq-api /build/bin/voxq-worker /build/bin/voxq /usr/local/bin/
# Fails the build if a shared library is missing.
RUN voxq-worker --version && voxq-api --version && voxq --version

RUN useradd --system --user-group --uid 10001 --create-home --home-dir /home/voxq voxq
USER voxq
WORKDIR /home/voxq
# Jobs (and reprocessing) may ask for `model: base`, the multilingual base model.
ENV VOXQ_MODEL_DIR=/models/whisper-tiny.en \
    VOXQ_MODELS='{base="/models/whisper-base"}' \
    VOXQ_VAD_MODEL=/models/silero_vad_v6.onnx \
    VOXQ_LISTEN_ADDR=0.0.0.0:8080
EXPOSE 8080
# Prometheus metrics when VOXQ_METRICS_ADDR is set (compose: 0.0.0.0:9464, internal only).
EXPOSE 9464
CMD ["voxq-api"]
