#!/bin/sh
# Starts vLLM's OpenAI-compatible server with the seed's interface:
#   MODEL_DIR   directory of the model under /workspace/models (required)
#   MODEL_NAME  name clients send in "model" (default: MODEL_DIR)
#   VLLM_PORT   port to listen on (default 9999)
#   VLLM_MODELS_ROOT  where the model root is mounted (default /workspace/models)
# Arguments are passed on to vLLM. When CUDA_VISIBLE_DEVICES lists several GPUs and no tensor
# parallel size is given, it defaults to their number (the seed asked users to add -tp by hand).
#
# Secrets (VLLM_API_KEY, HF_TOKEN, ...) come from a file, never from arguments (argv is public to
# every process) nor from `docker run -e/--env-file` (those land in `docker inspect`):
#   VLLM_SECRETS_FILE  KEY=VALUE lines, default /run/secrets/vllm-server.env; the role mounts its
#                      root:root 0600 file there read-only. No file there: no secrets (the seed's
#                      docker run line). Set to "" to skip it; set to a path that is missing: error.
# The file is read like `docker run --env-file` reads one, never by the shell: leading blanks are
# dropped, blank lines and lines starting with # are skipped, each other line is NAME=VALUE, split
# at the first "=", the value taken literally (quotes, $(...) and backticks included). A name must
# match ^[A-Za-z_][A-Za-z0-9_]*$; any other line stops the start, naming its line number only.
# No value is ever printed.
#
# Privileges: started as root (the image has no USER), it reads the secrets file, checks that the
# vllm user (uid/gid 2000, made by install-vllm.sh) can read the model and write the cache, then
# execs vLLM through setpriv as that user with no supplementary groups, no capabilities, empty
# inheritable (and, when CAP_SETPCAP is there to do it, bounding) sets and no_new_privs. Started
# as any other user (docker run --user 2000:2000), it runs vLLM as that user directly.
# The container needs only SETUID and SETGID for this (see scripts/container-hardening-check.sh).
#
# Init: the last exec is `tini -s -- python3 -m vllm...`, so tini takes over this script's PID 1
# as the vllm user: it passes docker stop's SIGTERM on to vLLM (which then drains in-flight
# requests for --shutdown-timeout seconds) and reaps zombies. tini runs after the user switch, not
# before it as root, because a root tini without CAP_KILL may not signal another uid.
# (-s: subreaper when not PID 1, e.g. under docker run --init; no -g: SIGTERM to vLLM's API server
# only, which stops its engine processes itself, in order.)
#
# Cache: HOME, HF_HOME, VLLM_CACHE_ROOT, XDG_CACHE_HOME, TRITON_CACHE_DIR, TORCHINDUCTOR_CACHE_DIR
# (the Dockerfile's ENV) all lie under VLLM_CACHE_DIR (default /workspace/cache), which the host
# mounts from the role's vllm_server_cache_dir. The entrypoint does not chown it: under
# --cap-drop ALL it has no CAP_CHOWN, and the host directory's owner is the host's business (the
# role creates it 2000:2000). When that user cannot write there, it stops with a message that says so.
#
# API key on every path: when VLLM_API_KEY is set it adds
#   --middleware vllm_fleet_auth.APIKeyMiddleware
# (unless given already), so /invocations, /tokenize, /metrics, ... ask for the key as /v1 does;
# /health and /ping stay open (VLLM_AUTH_OPEN_PATHS, see vllm_fleet_auth.py).
#
# Exit codes before vLLM starts: 2 configuration (model, secrets file), 3 /dev/shm too small,
# 4 user switch or permissions (cache, model files).
set -eu
run_uid=2000 run_gid=2000  # the image's vllm user: the host's cache directory must be theirs
me=vllm-entrypoint

if [ "${1:-}" = --healthcheck ]; then  # Docker's HEALTHCHECK: is /health answering 200?
    exec python3 -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('VLLM_PORT', '9999'), timeout=4)"
fi

die() {  # die CODE MESSAGE...
    code=$1
    shift
    echo "$me: $*" >&2
    exit "$code"
}

# --- secrets ------------------------------------------------------------------------------------
# Explicit lists, not ranges: in some locales [A-Z] also matches other letters.
name_chars=ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_
load_secrets() {  # load_secrets FILE: export its NAME=VALUE lines; no eval, no echo of a value
    n=0
    cr=$(printf '\r')
    while IFS= read -r line || [ -n "$line" ]; do
        n=$((n + 1))
        line=${line%"$cr"}                 # a file saved with CRLF line ends
        line=${line#"${line%%[! 	]*}"}  # leading blanks and tabs, as docker's --env-file drops them
        case $line in '' | '#'*) continue ;; esac
        # Neither the line nor its "name" is shown: a line without "=" may be a bare secret.
        case $line in
            *=*) name=${line%%=*} ;;
            *) die 2 "$1 line $n: not NAME=VALUE (the line is not shown)" ;;
        esac
        case $name in
            '' | [0123456789]* | *[!$name_chars]*)
                die 2 "$1 line $n: the name before '=' must match [A-Za-z_][A-Za-z0-9_]* (the line is not shown)" ;;
        esac
        # one expansion of "${line#*=}", the text after the first "=", as it is: nothing in it runs
        export "$name=${line#*=}"
    done <"$1"
}
secrets_file=${VLLM_SECRETS_FILE-/run/secrets/vllm-server.env}
if [ -n "$secrets_file" ]; then
    if [ -e "$secrets_file" ]; then
        # docker run -v makes a directory where the host's file was missing: no secrets, no key
        [ -f "$secrets_file" ] || die 2 "$secrets_file is not a file; was the host's secrets file" \
            "missing when the container started (docker then mounts a new empty directory)?"
        [ -r "$secrets_file" ] || die 2 "$secrets_file is not readable by uid $(id -u):" \
            "start the container as root (the entrypoint then drops to uid $run_uid itself)"
        load_secrets "$secrets_file"
    elif [ -n "${VLLM_SECRETS_FILE:-}" ]; then
        die 2 "VLLM_SECRETS_FILE=$secrets_file does not exist; is the secrets file mounted there?"
    fi
fi

# --- model, tensor parallel size, /dev/shm --------------------------------------------------------
: "${MODEL_DIR:?MODEL_DIR must name the model directory under /workspace/models}"
model_path="${VLLM_MODELS_ROOT:-/workspace/models}/${MODEL_DIR}"
if [ ! -f "${model_path}/config.json" ]; then
    echo "$me: ${model_path}/config.json not found; is the model root mounted there and MODEL_DIR right?" >&2
    exit 2
fi
tp_given=no
middleware_given=no
for arg in "$@"; do
    case "$arg" in
        -tp | -tp=* | --tensor-parallel-size | --tensor-parallel-size=*) tp_given=yes ;;
        vllm_fleet_auth.APIKeyMiddleware | --middleware=vllm_fleet_auth.APIKeyMiddleware) middleware_given=yes ;;
    esac
done
if [ "$tp_given" = no ] && [ -n "${CUDA_VISIBLE_DEVICES:-}" ]; then
    n=$(printf '%s' "$CUDA_VISIBLE_DEVICES" | tr ',' '\n' | grep -c .)
    if [ "$n" -gt 1 ]; then set -- --tensor-parallel-size "$n" "$@"; fi
fi
if [ -n "${VLLM_API_KEY:-}" ] && [ "$middleware_given" = no ]; then
    set -- --middleware vllm_fleet_auth.APIKeyMiddleware "$@"
fi
# vLLM's engine and workers talk through queues in /dev/shm (about 400 MiB with vLLM 0.32/0.33).
# Docker gives a container 64 MiB unless it runs with --ipc=host or --shm-size, and the seed's
# docker run line has neither: say so now, not in a stack trace after the model has loaded.
shm_free_mib=$(df -Pm /dev/shm 2>/dev/null | awk 'NR == 2 { print $4 }')
if [ -n "$shm_free_mib" ] && [ "$shm_free_mib" -lt "${VLLM_MIN_SHM_MIB:-512}" ]; then
    echo "$me: /dev/shm has ${shm_free_mib} MiB free; vLLM needs at least ${VLLM_MIN_SHM_MIB:-512} MiB." \
         "Run the container with --ipc=host (or --shm-size=16g). VLLM_MIN_SHM_MIB=0 skips this check." >&2
    exit 3
fi

# --- the user vLLM runs as ----------------------------------------------------------------------
uid=$(id -u)
if [ "$uid" = 0 ]; then
    as_vllm() { setpriv --reuid="$run_uid" --regid="$run_gid" --clear-groups -- "$@"; }
    as_vllm true || die 4 "cannot switch to uid $run_uid: the container needs the capabilities" \
        "SETUID and SETGID (docker run --cap-drop ALL --cap-add SETUID --cap-add SETGID)"
    who="uid $run_uid (the image's vllm user)"
else
    as_vllm() { "$@"; }
    who="uid $uid"
fi
as_vllm test -r "$model_path/config.json" ||
    die 4 "$model_path/config.json is not readable by $who: make the host's model files world-readable"
cache_dir=${VLLM_CACHE_DIR:-/workspace/cache}
[ -d "$cache_dir" ] || die 4 "$cache_dir does not exist (the image makes it; is something odd mounted there?)"
# The cache root, and those of its users' directories that exist already: a host directory last
# written by an image that ran vLLM as root holds root-owned ones.
for dir in "$cache_dir" "${HOME:-}" "${XDG_CACHE_HOME:-}" "${HF_HOME:-}" "${VLLM_CACHE_ROOT:-}" \
           "${TRITON_CACHE_DIR:-}" "${TORCHINDUCTOR_CACHE_DIR:-}"; do
    if [ -z "$dir" ] || [ ! -d "$dir" ]; then continue; fi
    as_vllm test -w "$dir" || die 4 "$dir is not writable by $who. It is the host's cache directory" \
        "(the role's vllm_server_cache_dir, mounted at $cache_dir) or lies in it: make it all owned by" \
        "the user vLLM runs as (for the image's vllm user: chown -R $run_uid:$run_gid on the host directory)"
done

set -- tini -s -- python3 -m vllm.entrypoints.openai.api_server \
    --host 0.0.0.0 --port "${VLLM_PORT:-9999}" \
    --model "$model_path" --served-model-name "${MODEL_NAME:-$MODEL_DIR}" "$@"
if [ "$uid" != 0 ]; then
    exec "$@"
fi
# Dropping the bounding set needs CAP_SETPCAP (bit 8 of CapEff); without it (the role's
# --cap-drop ALL --cap-add SETUID --cap-add SETGID) vLLM still ends with no capabilities at all:
# the uid change clears the permitted and effective sets, and no_new_privs stops execve from
# granting any (setuid or file capabilities), so the leftover bounding set grants nothing.
bounding=
cap_eff=$(awk '/^CapEff:/ { print $2 }' /proc/self/status 2>/dev/null || true)
if [ -n "$cap_eff" ] && [ $((0x$cap_eff & 0x100)) -ne 0 ]; then
    bounding=--bounding-set=-all
fi
# shellcheck disable=SC2086  # $bounding is one option or nothing
exec setpriv --reuid="$run_uid" --regid="$run_gid" --clear-groups --inh-caps=-all $bounding \
    --no-new-privs -- "$@"
