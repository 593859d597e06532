#!/bin/sh
# TEST DOUBLE of NVIDIA's libnvidia-container apt repository (https://nvidia.github.io/libnvidia-container):
# the same layout (stable/deb/amd64/, flat, InRelease signed), the same four package names with the
# toolkit's dependencies between them, in two versions (the role must hold the pinned 1.18.2, not take
# 1.19.0). The packages hold only a note: there is no GPU here for the real toolkit to drive.
set -eu
root=${1:-/srv/test-double-nvidia-repo}
repo=$root/stable/deb/amd64
work=$(mktemp -d)
mkdir -p "$repo"

make_deb() {  # name version depends
  d=$work/$1_$2
  mkdir -p "$d/DEBIAN" "$d/usr/share/doc/$1"
  echo "TEST DOUBLE of NVIDIA's $1 $2, made by molecule/gpu-prep for vllm-fleet's tests." > "$d/usr/share/doc/$1/TEST-DOUBLE"
  {
    echo "Package: $1"
    echo "Version: $2"
    echo "Architecture: amd64"
    echo "Maintainer: vllm-fleet tests <tests@invalid>"
    [ -n "$3" ] && echo "Depends: $3"
    echo "Description: TEST DOUBLE of $1 (no GPU code inside)"
  } > "$d/DEBIAN/control"
  dpkg-deb --root-owner-group --build "$d" "$repo/$1_$2_amd64.deb" >/dev/null
}

for v in 1.18.2-1 1.19.0-1; do
  make_deb libnvidia-container1 "$v" ""
  make_deb libnvidia-container-tools "$v" "libnvidia-container1 (>= $v)"
  make_deb nvidia-container-toolkit-base "$v" ""
  make_deb nvidia-container-toolkit "$v" "nvidia-container-toolkit-base (= $v), libnvidia-container-tools (>= $v)"
done

export GNUPGHOME=$work/gnupg
mkdir -m 700 "$GNUPGHOME"
gpg --batch --quiet --pinentry-mode loopback --passphrase '' \
    --quick-gen-key "vllm-fleet test double repository <tests@invalid>" rsa3072 sign never
gpg --batch --armor --export > "$root/gpgkey"
# its fingerprint as gpg gives it, for the converge to pin (prepare.yml hands it over): the roles' own
# reader (module signing_key) must find the same one in the key the repository serves
gpg --batch --with-colons --list-keys | awk -F: '$1 == "fpr" { print $10; exit }' > "$root/gpgkey.fingerprint"
cd "$repo"
apt-ftparchive packages . > Packages
apt-ftparchive -o APT::FTPArchive::Release::Origin="vllm-fleet test double" release . > Release
gpg --batch --yes --clearsign -o InRelease Release
gpg --batch --yes -abs -o Release.gpg Release
rm -rf "$work"
