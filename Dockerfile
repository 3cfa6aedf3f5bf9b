# syntax=docker/dockerfile:1
# PersonaTalk: training, dubbing and evaluation in one image, on NVIDIA GPUs or the CPU.
#
# Base image: python:3.11-slim rather than nvidia/cuda. The PyPI torch wheels bring their own CUDA
# runtime, cuDNN, cuBLAS and NCCL (the nvidia-* packages), so the image needs only the host's driver,
# which the NVIDIA Container Toolkit mounts at `docker run --gpus all`. A CUDA base image would add a
# second copy of those libraries (several GB, and one more version to keep matched) and would need
# Python 3.11 from a PPA. Bookworm is pinned for stable package names.
#
# Build, from the repository root (the SHA is recorded in every run, as there is no .git in the image):
#   docker build -t personatalk --build-arg GIT_SHA=$(git rev-parse HEAD) .
# Run:
#   docker run --rm personatalk                                   # help: config groups and keys
#   docker run --rm --gpus all --shm-size 8g \
#     -v "$PWD/data:/app/data" -v "$PWD/outputs:/app/outputs" \
#     personatalk python -m src.train experiment=tiny trainer=gpu  # any experiment=<name>
#   ... python -m src.train experiment=<name> trainer=ddp          # every visible GPU
#   ... python -m src.train experiment=<name> ckpt_path=outputs/runs/<task>/<run>/checkpoints/last.ckpt
#   docker run --rm personatalk python -m pytest                  # the CPU test suite
# --shm-size: DataLoader workers pass batches through shared memory (Docker's default is 64 MB).
# Runs land in /app/outputs (mount it); datasets, shards and user-supplied model files in /app/data.
# W&B online: add `-e WANDB_API_KEY=... ` and `logger=wandb logger.wandb.offline=false`.

FROM python:3.11-slim-bookworm

# OpenCV (pulled in by mediapipe) loads libGL and glib at import; mediapipe ships its own EGL/GLES
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*

ENV PYTHONUNBUFFERED=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

RUN pip install --no-cache-dir "uv>=0.5"

WORKDIR /app

# Dependencies first, in a layer that is rebuilt only when pyproject.toml or the overrides change.
# The overrides drop mediapipe's unused jax, jaxlib and sounddevice.
COPY pyproject.toml uv-overrides.txt ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv pip install --system --override uv-overrides.txt -r pyproject.toml --extra dev

# Then the code, listed one by one so that a local .venv/, data/ or outputs/ never enters the image.
# Installed editable: src/train.py finds the Hydra configs at ../experiments, next to it.
COPY README.md Makefile ./
COPY experiments ./experiments
COPY src ./src
COPY data_prep ./data_prep
COPY eval ./eval
COPY tests ./tests
COPY docs ./docs
RUN uv pip install --system --no-deps --no-cache -e .

ARG GIT_SHA=unknown
ENV PERSONATALK_GIT_SHA=${GIT_SHA}

CMD ["python", "-m", "src.train", "--help"]
