#!/usr/bin/env bash
# Makes sure a Docker engine answers on this machine, and that debootstrap is here for the test
# images: installs Debian's docker.io when no engine is installed, and starts it (through systemd
# when systemd runs, else as a background dockerd). Needs root for the installs.
set -euo pipefail
need=()
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if docker info >/dev/null 2>&1; then exit 0; fi
if [ "$(ps -p 1 -o comm= 2>/dev/null)" = systemd ] && systemctl start docker 2>/dev/null; then
  :
else
  echo "starting dockerd in the background (log: /var/log/dockerd.log)"
  nohup dockerd >/var/log/dockerd.log 2>&1 &
fi
for _ in $(seq 1 60); do
  docker info >/dev/null 2>&1 && exit 0
  sleep 1
done
echo "the Docker engine did not answer within 60 s; see /var/log/dockerd.log" >&2
exit 1
