#!/usr/bin/env bash
# Checks, against a built vLLM server image, that the locked-down way the role runs it works:
# secrets from a mounted root-only file (not in `docker inspect`), vLLM as uid 2000 with no
# capabilities, tini as PID 1, the API key on every path but /health and /ping, a graceful
# `docker stop`, and that the seed's plain docker run line still serves. Prints PASS/FAIL per
# check; exits 1 when any check fails. Needs root (it chowns the cache directory to 2000:2000 and
# reads the container's processes in /proc) and a Docker engine (scripts/ensure-docker.sh).
#
# Usage: scripts/container-hardening-check.sh IMAGE
#   MODEL_ROOT    a model root holding MODEL_DIR (default: the tiny test model, from
#                 .cache/models/tiny-chat or made with scripts/make_tiny_model.py)
#   MODEL_DIR     default tiny-chat
#   HOST_PORT     host port, on 127.0.0.1 only (default 18999: apart from 9999 and the molecule tests' 1999x)
#   START_TIMEOUT seconds to wait for /health (default 300)
#   EXTRA_RUN_ARGS  more docker run options, e.g. "--gpus all" for a cuda image
# For a cpu image (VLLM_TARGET_DEVICE=cpu in its environment) it adds what vLLM needs on a CPU:
# -e VLLM_CPU_KVCACHE_SPACE=1 and --enforce-eager.
#
# Builds nothing; removes the containers and temporary files it made, never an image. Example,
# after building the cpu target by hand (roles/vllm_server/files/Dockerfile says how):
#   scripts/container-hardening-check.sh vllm-hardening-test:cpu
# shellcheck disable=SC2016  # the checks hand their values to `bash -c '...'` as "$1", "$2", ...
set -uo pipefail
image=${1:?usage: $0 IMAGE}
cd "$(dirname "$0")/.." || exit 2
DOCKER=${DOCKER:-docker}
MODEL_DIR=${MODEL_DIR:-tiny-chat}
HOST_PORT=${HOST_PORT:-18999}
START_TIMEOUT=${START_TIMEOUT:-300}
read -r -a extra <<<"${EXTRA_RUN_ARGS:-}"
url=http://127.0.0.1:$HOST_PORT
name=hardening-check-$$
failures=0
passes=0

pass() { passes=$((passes + 1)); printf 'PASS  %s\n' "$*"; }
fail() { failures=$((failures + 1)); printf 'FAIL  %s\n' "$*"; }
check() {  # check DESCRIPTION COMMAND...: PASS when the command succeeds
  local what=$1
  shift
  if "$@"; then pass "$what"; else fail "$what"; fi
}
info() { printf '      %s\n' "$*"; }

$DOCKER image inspect "$image" >/dev/null 2>&1 || { echo "image $image not found" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "run as root: the cache directory is chowned to 2000:2000" >&2; exit 2; }

work=$(mktemp -d /tmp/hardening-check.XXXXXX)
cleanup() {
  for c in "$name" "$name-seed" "$name-neg"; do $DOCKER rm -f "$c" >/dev/null 2>&1; done
  rm -rf "$work"
}
trap cleanup EXIT

# --- inputs: the model, a root-only secrets file, a cache directory owned by the vllm user ------
models=$work/models
mkdir -p "$models"
if [ -n "${MODEL_ROOT:-}" ]; then
  models=$MODEL_ROOT
elif [ -f .cache/models/tiny-chat/config.json ]; then
  cp -r .cache/models/tiny-chat "$models/"
else
  .venv/bin/python scripts/make_tiny_model.py "$models/tiny-chat" >/dev/null
fi
chmod -R a+rX "$work"
# unusual values, so that a match anywhere can only come from a leak
key=hc-key-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')
token=hf_hc$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')
install -d -m 0700 "$work/etc"
printf '# as the role writes it\nVLLM_API_KEY=%s\nHF_TOKEN=%s\n' "$key" "$token" >"$work/etc/vllm-server.env"
chmod 0600 "$work/etc/vllm-server.env"
install -d -o 2000 -g 2000 -m 0755 "$work/cache"

cpu_args=()
if $DOCKER image inspect --format '{{range .Config.Env}}{{println .}}{{end}}' "$image" | grep -qx VLLM_TARGET_DEVICE=cpu; then
  cpu_args=(--enforce-eager)
  cpu_env=(-e VLLM_CPU_KVCACHE_SPACE=1)
else
  cpu_env=()
fi

# The role's docker run line (the capability set, the secrets mount, the cache mount).
hardened=(run -d --name "$name" --pull never
  --security-opt no-new-privileges --cap-drop ALL --cap-add SETUID --cap-add SETGID
  --pids-limit 8192 --log-driver json-file --log-opt max-size=50m --log-opt max-file=3
  -v "$work/etc/vllm-server.env:/run/secrets/vllm-server.env:ro"
  -e "MODEL_DIR=$MODEL_DIR" -e "MODEL_NAME=$MODEL_DIR" -e VLLM_PORT=9999 -e VLLM_HOST_IP=127.0.0.1
  "${cpu_env[@]}" -p "127.0.0.1:$HOST_PORT:9999"
  -v "$models:/workspace/models:ro" -v "$work/cache:/workspace/cache" --shm-size=1g "${extra[@]}"
  "$image" "${cpu_args[@]}" --disable-fastapi-docs --allowed-origins '[]' --shutdown-timeout 20)

code() {  # code METHOD PATH [curl options]: the HTTP status
  local method=$1 path=$2
  shift 2
  curl -s -o /dev/null -w '%{http_code}' -X "$method" --max-time 10 "$@" "$url$path"
}

wait_healthy() {  # wait_healthy CONTAINER: 0 once /health answers 200
  local start=$SECONDS
  while [ $((SECONDS - start)) -lt "$START_TIMEOUT" ]; do
    [ "$(code GET /health)" = 200 ] && { started_in=$((SECONDS - start)); return 0; }
    [ "$($DOCKER inspect -f '{{.State.Running}}' "$1" 2>/dev/null)" = true ] || return 1
    sleep 1
  done
  return 1
}

container_pids() { $DOCKER top "$1" -eo pid | tail -n +2; }

# --- 1. the hardened run ------------------------------------------------------------------------
echo "== $image, run as the role runs it"
$DOCKER "${hardened[@]}" >/dev/null || { fail "docker run with the role's options"; exit 1; }
if wait_healthy "$name"; then
  pass "serves /health under --cap-drop ALL + SETUID/SETGID, no-new-privileges (ready in ${started_in} s)"
else
  fail "serves /health under the role's options"
  $DOCKER logs --tail 30 "$name" 2>&1 | sed 's/^/      | /'
  exit 1
fi

check "/health answers 200 without the key" [ "$(code GET /health)" = 200 ]
ping=$(code GET /ping)
check "/ping answers 200 without the key (SageMaker's health check; got $ping)" [ "$ping" = 200 ]
check "/v1/models answers 401 without the key" [ "$(code GET /v1/models)" = 401 ]
check "/v1/models answers 401 with a wrong key" [ "$(code GET /v1/models -H 'Authorization: Bearer wrong')" = 401 ]
check "/v1/models answers 200 with the key" [ "$(code GET /v1/models -H "Authorization: Bearer $key")" = 200 ]
# vLLM 0.32 on the CPU registers these outside /v1 (its log's "Route:" lines), so its own key
# check leaves them open; /pause and /is_paused exist only with VLLM_SERVER_DEV_MODE=1
for path in /invocations /tokenize /detokenize /scale_elastic_ep /is_scaling_elastic_ep /load /metrics \
  /version /kv_event_sources /generative_scoring /pause /is_paused; do
  got=$(code POST "$path" -H 'Content-Type: application/json' -d '{}')
  check "$path answers 401 without the key (POST: $got)" [ "$got" = 401 ]
done
# which of the paths exist at all (a 404 with the key: not registered in this vLLM and mode)
for path in /pause /abort_requests; do
  info "$path with the key: $(code POST "$path" -H "Authorization: Bearer $key" -H 'Content-Type: application/json' -d '{}') (404: no such endpoint here)"
done
body=$(curl -s --max-time 10 "$url/invocations" -X POST)
check "the 401 body is OpenAI's error object (code invalid_api_key)" \
  python3 -c 'import json, sys; e = json.loads(sys.argv[1])["error"]; sys.exit(e["code"] != "invalid_api_key")' "$body"
chat=$(curl -s --max-time 30 -w '\n%{http_code} %{time_total}' "$url/v1/chat/completions" \
  -H "Authorization: Bearer $key" -H 'Content-Type: application/json' \
  -d "{\"model\": \"$MODEL_DIR\", \"messages\": [{\"role\": \"user\", \"content\": \"hello\"}], \"max_tokens\": 8}")
status=$(tail -n 1 <<<"$chat")
check "a chat completion with the key answers 200 with a choice ($status s)" \
  python3 -c 'import json, sys; sys.exit(not json.loads(sys.argv[1])["choices"][0]["message"])' "$(head -n 1 <<<"$chat")"
[ "${status%% *}" = 200 ] || fail "chat completion status ${status%% *}"
check "the chat completion asked for the key too" [ "$(code POST /v1/chat/completions -H 'Content-Type: application/json' -d '{}')" = 401 ]

inspect=$($DOCKER inspect "$name")
check "docker inspect holds neither the API key nor HF_TOKEN" bash -c '! grep -qF -e "$1" -e "$2" <<<"$3"' _ "$key" "$token" "$inspect"
check "docker inspect shows the secrets file as a read-only mount" \
  bash -c 'grep -q "\"Destination\": \"/run/secrets/vllm-server.env\"" <<<"$1" && grep -q "\"RW\": false" <<<"$1"' _ "$inspect"

pid1=$($DOCKER inspect -f '{{.State.Pid}}' "$name")
check "PID 1 is tini ($(cat "/proc/$pid1/comm"))" [ "$(cat "/proc/$pid1/comm")" = tini ]
uids=() leaks=0 caps=0 nnp=0 n=0
for pid in $(container_pids "$name"); do
  [ -r "/proc/$pid/status" ] || continue
  n=$((n + 1))
  uids+=("$(awk '/^Uid:/ { print $2 ":" $3 }' "/proc/$pid/status")/$(awk '/^Gid:/ { print $2 }' "/proc/$pid/status")")
  [ "$(awk '/^CapEff:/ { print $2 }' "/proc/$pid/status")" = 0000000000000000 ] || caps=$((caps + 1))
  [ "$(awk '/^NoNewPrivs:/ { print $2 }' "/proc/$pid/status")" = 1 ] || nnp=$((nnp + 1))
  tr '\0' '\n' <"/proc/$pid/cmdline" | grep -qF -e "$key" -e "$token" && leaks=$((leaks + 1))
done
distinct=$(printf '%s\n' "${uids[@]}" | sort -u | tr '\n' ' ')
check "all $n processes, tini included, run as uid 2000, gid 2000 (real:effective/gid: $distinct)" \
  [ "$distinct" = "2000:2000/2000 " ]
check "no process has an effective capability ($caps have one)" [ "$caps" = 0 ]
check "every process has no_new_privs ($nnp lack it)" [ "$nnp" = 0 ]
check "no process's argv holds the key or the token ($leaks do)" [ "$leaks" = 0 ]
info "$($DOCKER top "$name" -eo uid,pid,comm | tail -n +2 | awk '{ printf "%s(uid %s) ", $3, $1 }')"
check "docker exec env shows neither secret" bash -c '! '"$DOCKER"' exec "$1" env | grep -qF -e "$2" -e "$3"' _ "$name" "$key" "$token"
check "the secrets are not in the logs" bash -c '! '"$DOCKER"' logs "$1" 2>&1 | grep -qF -e "$2" -e "$3"' _ "$name" "$key" "$token"
check "the cache directory got vLLM's files, owned by 2000" \
  bash -c '[ -n "$(find "$1" -mindepth 1 -maxdepth 1)" ] && [ -z "$(find "$1" ! -uid 2000)" ]' _ "$work/cache"
numa=$($DOCKER logs "$name" 2>&1 | grep -c 'numa_.* failed. errno: 1' || true)
[ "$numa" = 0 ] || info "vLLM logged $numa NUMA binding warnings (EPERM: Docker's seccomp profile allows" \
  "mbind/set_mempolicy/migrate_pages only with CAP_SYS_NICE); serving is unaffected"

# SIGTERM with requests in flight: tini passes it on, vLLM (--shutdown-timeout 20) lets the running
# requests finish, then exits by itself, well before docker stop's 40 s turn to SIGKILL.
drain=$(python3 - "$url" "$key" "$MODEL_DIR" "$DOCKER" "$name" <<'PY'
import json, subprocess, sys, threading, time, urllib.request
url, key, model, docker, name = sys.argv[1:]
results = []
def ask():
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}],
                       "max_tokens": 2000, "ignore_eos": True}).encode()
    req = urllib.request.Request(url + "/v1/chat/completions", body, {
        "Authorization": "Bearer " + key, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            results.append((time.monotonic(), json.load(r)["usage"]["completion_tokens"]))
    except Exception as e:  # noqa: BLE001  # report any failure as an unfinished request
        results.append((time.monotonic(), repr(e)))
threads = [threading.Thread(target=ask) for _ in range(16)]
for t in threads:
    t.start()
time.sleep(1.5)  # all 16 are decoding by now (about 8 s of work on 2 cores)
stop_at = time.monotonic()
subprocess.run([docker, "stop", "-t", "40", name], check=True, capture_output=True)
stopped = time.monotonic() - stop_at
for t in threads:
    t.join()
done_after = sum(1 for at, tokens in results if tokens == 2000 and at > stop_at)
full = sum(1 for _, tokens in results if tokens == 2000)
print(f"{full} {done_after} {stopped:.1f}")
PY
)
read -r full done_after took <<<"$drain"
exit_code=$($DOCKER inspect -f '{{.State.ExitCode}}' "$name")
check "docker stop ends it in ${took} s with exit code $exit_code (no SIGKILL: < 40 s, 0)" \
  bash -c '[ "${1%.*}" -lt 40 ] && [ "$2" = 0 ]' _ "$took" "$exit_code"
check "in-flight requests drained: ${full:-0}/16 got all 2000 tokens, ${done_after:-0} of them finished after the SIGTERM" \
  bash -c '[ "$1" = 16 ] && [ "$2" -gt 0 ]' _ "${full:-0}" "${done_after:-0}"
check "vLLM logged a drain shutdown" bash -c "$DOCKER logs \"\$1\" 2>&1 | grep -q 'shutdown.*mode=drain'" _ "$name"
check "tini forwarded the signal without an error" bash -c "! $DOCKER logs \"\$1\" 2>&1 | grep -q 'FATAL tini'" _ "$name"
$DOCKER logs "$name" 2>&1 | grep -E '\[shutdown\] (API server|EngineCore)' | sed 's/^/      | /' | head -6
$DOCKER rm "$name" >/dev/null

# --- 2. refusals before vLLM starts: they take a second each ------------------------------------
echo "== refusals"
neg() {  # neg DOCKER-RUN-OPTIONS... : exit code and output of a run that should stop early
  $DOCKER rm -f "$name-neg" >/dev/null 2>&1
  timeout 120 "$DOCKER" run --name "$name-neg" --pull never --security-opt no-new-privileges --cap-drop ALL \
    -e "MODEL_DIR=$MODEL_DIR" -v "$models:/workspace/models:ro" --shm-size=1g "$@" 2>&1
  echo "exit=$?"
}
run_caps=(--cap-add SETUID --cap-add SETGID)
install -d -o 0 -g 0 -m 0755 "$work/rootcache"
out=$(neg "${run_caps[@]}" -v "$work/rootcache:/workspace/cache" "$image")
check "a root-owned cache directory stops it with a message naming vllm_server_cache_dir (${out##*exit=})" \
  bash -c 'grep -q "vllm_server_cache_dir" <<<"$1" && [ "${1##*exit=}" = 4 ]' _ "$out"
printf 'VLLM_API_KEY=%s\n1BAD=%s\n' "$key" "$token" >"$work/etc/bad.env"
chmod 0600 "$work/etc/bad.env"
out=$(neg "${run_caps[@]}" -v "$work/etc/bad.env:/run/secrets/vllm-server.env:ro" "$image")
check "a bad secrets line stops it naming the line, showing no value (${out##*exit=})" \
  bash -c 'grep -q "line 2:" <<<"$1" && ! grep -qF -e "$2" -e "$3" <<<"$1" && [ "${1##*exit=}" = 2 ]' _ "$out" "$key" "$token"
out=$(neg "${run_caps[@]}" --user 2000:2000 -v "$work/etc/vllm-server.env:/run/secrets/vllm-server.env:ro" "$image")
check "started as --user 2000:2000 with the root-only secrets file: refused, not run open (${out##*exit=})" \
  bash -c 'grep -q "not readable by uid 2000" <<<"$1" && [ "${1##*exit=}" = 2 ]' _ "$out"
out=$(neg --cap-add SETGID -v "$work/cache:/workspace/cache" "$image")
check "without CAP_SETUID it says which capabilities it needs (${out##*exit=})" \
  bash -c 'grep -q "SETUID and SETGID" <<<"$1" && [ "${1##*exit=}" = 4 ]' _ "$out"
$DOCKER rm -f "$name-neg" >/dev/null 2>&1

# --- 3. the seed's plain docker run line ----------------------------------------------------------
# `docker run -v ROOT:/workspace/models -e MODEL_DIR -e MODEL_NAME -p 9999:9999 IMAGE`, no secrets,
# Docker's default capabilities, no cache mount; plus the /dev/shm size vLLM needs (the entrypoint
# refuses Docker's 64 MiB default with a message) and, for a cpu image, the CPU settings.
echo "== $image, the seed's docker run line"
$DOCKER run -d --name "$name-seed" -v "$models:/workspace/models" -e "MODEL_DIR=$MODEL_DIR" \
  -e "MODEL_NAME=$MODEL_DIR" -p "127.0.0.1:$HOST_PORT:9999" --shm-size=1g "${cpu_env[@]}" "${extra[@]}" \
  "$image" "${cpu_args[@]}" >/dev/null
if wait_healthy "$name-seed"; then
  pass "the seed's docker run line serves /health (ready in ${started_in} s)"
  check "without a key /v1/models is open, as in the seed" [ "$(code GET /v1/models)" = 200 ]
  check "... and so is /tokenize (no middleware without a key)" \
    [ "$(code POST /tokenize -H 'Content-Type: application/json' -d "{\"model\": \"$MODEL_DIR\", \"prompt\": \"hi\"}")" = 200 ]
  seed_uids=$($DOCKER top "$name-seed" -eo pid,uid | tail -n +2 | awk '{ print $2 }' | sort -u | tr '\n' ' ')
  check "vLLM runs as uid 2000 there too (uids: $seed_uids)" [ "$seed_uids" = "2000 " ]
  start=$SECONDS
  $DOCKER stop -t 30 "$name-seed" >/dev/null
  check "docker stop ends it in $((SECONDS - start)) s" [ $((SECONDS - start)) -lt 30 ]
else
  fail "the seed's docker run line serves /health"
  $DOCKER logs --tail 30 "$name-seed" 2>&1 | sed 's/^/      | /'
fi

echo "$passes passed, $failures failed"
[ "$failures" = 0 ]
