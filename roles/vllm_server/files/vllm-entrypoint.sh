#!/bin/sh
# Starts vLLM's OpenAI-compatible server with the seed's interface:
#   MODEL_DIR   directory of the model under /workspace/models (required)
#   MODEL_NAME  name clients send in "model" (default: MODEL_DIR)
#   VLLM_PORT   port to listen on (default 9999)
#   VLLM_MODELS_ROOT  where the model root is mounted (default /workspace/models)
# Arguments are passed on to vLLM. When CUDA_VISIBLE_DEVICES lists several GPUs and no tensor
# parallel size is given, it defaults to their number (the seed asked users to add -tp by hand).
# The API key, when wanted, comes from the environment (VLLM_API_KEY), never from arguments.
set -eu
if [ "${1:-}" = --healthcheck ]; then  # Docker's HEALTHCHECK: is /health answering 200?
    exec python3 -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('VLLM_PORT', '9999'), timeout=4)"
fi
: "${MODEL_DIR:?MODEL_DIR must name the model directory under /workspace/models}"
model_path="${VLLM_MODELS_ROOT:-/workspace/models}/${MODEL_DIR}"
if [ ! -f "${model_path}/config.json" ]; then
    echo "vllm-entrypoint: ${model_path}/config.json not found; is the model root mounted there and MODEL_DIR right?" >&2
    exit 2
fi
tp_given=no
for arg in "$@"; do
    case "$arg" in -tp|-tp=*|--tensor-parallel-size|--tensor-parallel-size=*) tp_given=yes ;; esac
done
if [ "$tp_given" = no ] && [ -n "${CUDA_VISIBLE_DEVICES:-}" ]; then
    n=$(printf '%s' "$CUDA_VISIBLE_DEVICES" | tr ',' '\n' | grep -c .)
    if [ "$n" -gt 1 ]; then set -- --tensor-parallel-size "$n" "$@"; fi
fi
# vLLM's engine and workers talk through queues in /dev/shm (about 400 MiB with vLLM 0.32/0.33).
# Docker gives a container 64 MiB unless it runs with --ipc=host or --shm-size, and the seed's
# docker run line has neither: say so now, not in a stack trace after the model has loaded.
shm_free_mib=$(df -Pm /dev/shm 2>/dev/null | awk 'NR == 2 { print $4 }')
if [ -n "$shm_free_mib" ] && [ "$shm_free_mib" -lt "${VLLM_MIN_SHM_MIB:-512}" ]; then
    echo "vllm-entrypoint: /dev/shm has ${shm_free_mib} MiB free; vLLM needs at least ${VLLM_MIN_SHM_MIB:-512} MiB." \
         "Run the container with --ipc=host (or --shm-size=16g). VLLM_MIN_SHM_MIB=0 skips this check." >&2
    exit 3
fi
exec python3 -m vllm.entrypoints.openai.api_server \
    --host 0.0.0.0 --port "${VLLM_PORT:-9999}" \
    --model "$model_path" --served-model-name "${MODEL_NAME:-$MODEL_DIR}" "$@"
