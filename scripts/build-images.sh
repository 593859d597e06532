#!/usr/bin/env bash
# Builds, on the local Docker engine, the images the demo and the tests need, without a registry:
#   local/vllm-testhost-debian:bookworm   Debian 12 host with systemd (molecule platform, demo host)
#   local/vllm-testhost-debian:bullseye   Debian 11 host with systemd (molecule platform)
#   local/debian:bookworm-slim            Debian 12 minbase: the base image of the `cpu` target here,
#                                         saved to $CACHE/images/local-debian-bookworm-slim.tar so
#                                         that the playbooks preload it on hosts that cannot pull
#                                         (inventories/local passes it as the CPU_BASE_IMAGE build
#                                         argument; the Dockerfile's default stays the public image)
# Each image is made with debootstrap from Debian's archive; one that exists is kept. Local names
# only: a public name here would hide, and be mistaken for, the registry's image.
# Usage: build-images.sh [SUITE...]   test-host suites to build (default: bookworm bullseye)
set -euo pipefail
CACHE=${CACHE:-$(pwd)/.cache}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
DOCKER=${DOCKER:-docker}
mkdir -p "$CACHE/images"

have() { $DOCKER image inspect "$1" >/dev/null 2>&1; }

bootstrap() {  # bootstrap SUITE TAG PACKAGES
  local suite=$1 tag=$2 pkgs=$3 root
  if have "$tag"; then echo "image $tag: present"; return; fi
  echo "image $tag: debootstrap $suite"
  root=$(mktemp -d)
  debootstrap --variant=minbase ${pkgs:+--include="$pkgs"} "$suite" "$root" "$MIRROR" >"$CACHE/debootstrap-$suite.log" 2>&1 \
    || { tail -20 "$CACHE/debootstrap-$suite.log"; rm -rf "$root"; exit 1; }
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  tar -C "$root" -c . | $DOCKER import \
    ${4:+--change "$4"} - "$tag" >/dev/null
  rm -rf "$root"
}

host_pkgs=systemd,systemd-sysv,dbus,python3,python3-apt,ca-certificates,iproute2,procps,sudo,curl
for suite in "${@:-bookworm bullseye}"; do
  for s in $suite; do
    bootstrap "$s" "local/vllm-testhost-debian:$s" "$host_pkgs" 'CMD ["/lib/systemd/systemd"]'
  done
done
base=local/debian:bookworm-slim
bootstrap bookworm "$base" "" 'CMD ["bash"]'

# saved again when the archive is missing or does not hold the image under this name
archive="$CACHE/images/local-debian-bookworm-slim.tar"
if ! grep -qF "\"$base\"" <<<"$(tar -xOf "$archive" manifest.json 2>/dev/null)"; then
  echo "image $base: saving to $archive"
  $DOCKER save "$base" -o "$archive.tmp" && mv "$archive.tmp" "$archive"
fi
echo "images ready; base image archive: $archive"
