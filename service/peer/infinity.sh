#!/usr/bin/env bash
# Serve all-MiniLM-L6-v2 with infinity-emb on CPU: the peer `service.benchmark --peer`
# measures beside mmembed. An optional benchmark extra, never a runtime dependency:
# infinity-emb lives in its own venv (created on first use), with mmembed's torch.
#
#   service/peer/infinity.sh PORT [MODEL_DIR]
#
# MODEL_DIR defaults to ../shared/models/all-MiniLM-L6-v2 beside the repository.
# Environment: MMEMBED_PEER_VENV (default .venv-peer in the repository),
# MMEMBED_PEER_PYTHON (default python3.11), MMEMBED_PEER_PIP_ARGS (extra pip
# arguments; where no CPU torch wheel is at hand, give
# "--extra-index-url https://download.pytorch.org/whl/cpu").
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
port="${1:?usage: $0 PORT [MODEL_DIR]}"
model="${2:-$root/../shared/models/all-MiniLM-L6-v2}"
venv="${MMEMBED_PEER_VENV:-$root/.venv-peer}"
version="0.0.78"

if [ ! -x "$venv/bin/infinity_emb" ]; then
    echo "installing infinity-emb $version into $venv (once)" >&2
    "${MMEMBED_PEER_PYTHON:-python3.11}" -m venv "$venv"
    # shellcheck disable=SC2086  # MMEMBED_PEER_PIP_ARGS is a list of arguments
    "$venv/bin/pip" install --quiet ${MMEMBED_PEER_PIP_ARGS:-} \
        -c "$root/service/peer/constraints.txt" "infinity-emb[server,torch]==$version"
fi

export HF_HUB_OFFLINE=1 INFINITY_ANONYMOUS_USAGE_STATS=0 DO_NOT_TRACK=1
exec "$venv/bin/infinity_emb" v2 --model-id "$model" --host 127.0.0.1 --port "$port" \
    --device cpu --engine torch --batch-size 32
