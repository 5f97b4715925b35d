#!/usr/bin/env bash
# Issue 16's measures, in one run on this machine:
#
#   bash bench/sidecar.sh        # SLICE=3 seconds per round, ROUNDS=5
#
# 1. Proxies in front of the same upstream (nginx serving a small file,
#    keep-alive): direct, nginx proxy_pass with upstream keep-alive, Caddy
#    reverse_proxy, the gatehouse sidecar with Basic auth (cached), and the
#    floor under it: benches/bare_proxy.rs, hyper's server and client with
#    nothing else (no auth, no header hygiene, no metrics), pooled through
#    hyper-util and with a connection per client connection. The upstream
#    and the proxy share CPU 0; wrk (32 connections) runs on CPU 1.
#    Beside each proxy's req/s: the CPU time it spent per request, user
#    and kernel, from /proc (what separates the proxies when they make the
#    same system calls).
# 2. The same handler (/healthz) public in one gatehouse and protected in
#    another, over HTTP and TLS, sent the same request (with the same
#    Authorization header): the authenticated ÷ public ratio of every
#    round, and of the p99s. A third gatehouse, public like the first, is
#    the control: its ratio to the first is what this machine's noise
#    alone gives. A round measures the three in the order public,
#    protected, control, control, protected, public (a slice each, each
#    after a second of unmeasured load on the same server), so a drift in
#    the machine's speed during the round weighs on each alike, and no
#    server's slice starts cold where another's starts warm.
# 3. A 1 MiB download and a 1 MiB upload through nginx proxy_pass and
#    through gatehouse (MB/s; an upload's MiB/s is its req/s), both with
#    their default buffering (nginx spools bodies past its buffers to temp
#    files), and gatehouse's peak RSS with 100 transfers at once.
#
# Rows are measured in alternating rounds and medians reported, so that
# drift on a shared machine favours no one. Every server is started here
# on a high loopback port and stopped by PID at exit.
set -euo pipefail
cd "$(dirname "$0")/.."

SLICE=${SLICE:-3}
ROUNDS=${ROUNDS:-5}
CONNECTIONS=${CONNECTIONS:-32}
# shellcheck source=bench/lib.sh
source bench/lib.sh
SLICE="${SLICE%s}s"

install_missing wrk wrk nginx nginx-light caddy caddy
need wrk || { echo "wrk is required (apt-get install wrk)" >&2; exit 1; }
need nginx || { echo "nginx is required (apt-get install nginx-light)" >&2; exit 1; }
build_gatehouse

declare -A ROWS CPU
PER_ROUND=""
row() { ROWS[$1]+="$2"$'\n'; }
# A row with the CPU time (user, kernel; microseconds) the process PID
# spent per request while wrk ran: utime and stime are in clock ticks.
TICK_US=$((1000000 / $(getconf CLK_TCK)))
cpu_row() { # name pid wrk-args...
  local name=$1 pid=$2 before after out
  shift 2
  before=$(awk '{ print $14, $15 }' "/proc/$pid/stat")
  out=$(wrk_once "$@")
  after=$(awk '{ print $14, $15 }' "/proc/$pid/stat")
  row "$name" "$out"
  CPU[$name]+="$(awk -v b="$before" -v a="$after" -v rps="${out%% *}" -v s="${SLICE%s}" -v t="$TICK_US" 'BEGIN {
    split(b, x, " "); split(a, y, " "); n = rps * s
    printf "%.2f %.2f", (y[1] - x[1]) * t / n, (y[2] - x[2]) * t / n }')"$'\n'
}
cpu_col() { awk -v c="$2" '{ print $c }' <<<"${CPU[$1]%$'\n'}" | median; }
col() { awk -v c="$2" '{ print $c }' <<<"${ROWS[$1]%$'\n'}" | median; }

mkdir -p "$WORK/app"
echo '{"hello":"app"}' >"$WORK/app/data.json"
head -c 1048576 /dev/urandom >"$WORK/app/big.bin"
head -c 1048576 /dev/urandom >"$WORK/upload.bin"
# wrk posts the 1 MiB body from a Lua script.
cat >"$WORK/upload.lua" <<'LUA'
local f = io.open(os.getenv("UPLOAD"), "rb")
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/octet-stream"
LUA

# The upstream: small file, 1 MiB file, and an upload sink.
start_nginx upstream 18500 <<NGINX
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:18500;
    root $WORK/app;
    # An upload is read and dropped, then answered.
    location = /upload { client_max_body_size 8m; return 200 "ok\n"; }
  }
NGINX

start_nginx proxy 18501 <<NGINX
  keepalive_requests 1000000;
  upstream app { server 127.0.0.1:18500; keepalive 64; }
  server {
    listen 127.0.0.1:18501;
    client_max_body_size 8m;
    location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
NGINX

if need caddy; then
  cat >"$WORK/Caddyfile" <<CADDY
{
  admin off
  auto_https off
}
http://127.0.0.1:18502 {
  log {
    output discard
  }
  reverse_proxy 127.0.0.1:18500
}
CADDY
  XDG_DATA_HOME=$WORK XDG_CONFIG_HOME=$WORK taskset -c 0 caddy run --config "$WORK/Caddyfile" --adapter caddyfile >"$WORK/caddy.log" 2>&1 &
  PIDS+=($!)
  wait_port 18502
fi

gatehouse_config() { # port tls(true|false) extra
  local file="$WORK/gatehouse-$1.toml" tls='[tls]
enabled = false'
  [ "$2" = true ] && tls='[tls]
self_signed = true'
  cat >"$file" <<TOML
[server]
listen = "127.0.0.1:$1"
$tls
[users]
bench = "$HASH"
[rate_limit]
per_ip = false
per_user = false
[limits]
max_body_bytes = 8388608
$3
TOML
  echo "$file"
}
start_gatehouse() { # port tls extra
  local config
  config=$(gatehouse_config "$1" "$2" "$3")
  RUST_LOG=${RUST_LOG:-warn} taskset -c 0 "$GATEHOUSE" serve --config "$config" 2>>"$WORK/gatehouse.log" >/dev/null &
  PIDS+=($!)
  wait_port "$1"
}
BARE=$(cargo bench --quiet --bench bare_proxy --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "bare_proxy" and m.get("executable"):
        print(m["executable"])' | tail -1)
taskset -c 0 "$BARE" 127.0.0.1:18508 127.0.0.1:18500 legacy &
PIDS+=($!)
BARE_POOLED=${PIDS[-1]}
taskset -c 0 "$BARE" 127.0.0.1:18509 127.0.0.1:18500 dedicated &
PIDS+=($!)
BARE_DEDICATED=${PIDS[-1]}
taskset -c 0 "$BARE" 127.0.0.1:18510 127.0.0.1:18500 copoll &
PIDS+=($!)
BARE_COPOLL=${PIDS[-1]}
wait_port 18508
wait_port 18509
wait_port 18510
# nginx's worker, not its master, does the proxying.
NGINX_WORKER=$(pgrep -P "$(cat "$WORK/proxy.pid")" | head -1)

start_gatehouse 18503 false '[upstream]
url = "http://127.0.0.1:18500"'
SIDECAR_PID=${PIDS[-1]}
curl -sf -H "$AUTH" http://127.0.0.1:18503/data.json >/dev/null

# Field F of line A over field F of line B.
ratio_of() { awk -v a="$(cut -d' ' -f"$3" <<<"$1")" -v b="$(cut -d' ' -f"$3" <<<"$2")" -v f="$4" 'BEGIN { printf f, a / b }'; }

echo "1. proxies in front of one upstream ($ROUNDS rounds of $SLICE)" >&2
for _ in $(seq 1 "$ROUNDS"); do
  row direct "$(wrk_once http://127.0.0.1:18500/data.json)"
  cpu_row nginx-proxy "$NGINX_WORKER" http://127.0.0.1:18501/data.json
  need caddy && row caddy-proxy "$(wrk_once http://127.0.0.1:18502/data.json)"
  cpu_row gatehouse-sidecar "$SIDECAR_PID" http://127.0.0.1:18503/data.json -H "$AUTH"
  cpu_row bare-hyper-pooled "$BARE_POOLED" http://127.0.0.1:18508/data.json
  cpu_row bare-hyper-dedicated "$BARE_DEDICATED" http://127.0.0.1:18509/data.json
  cpu_row bare-hyper-copoll "$BARE_COPOLL" http://127.0.0.1:18510/data.json
done

echo "3. 1 MiB down and up ($ROUNDS rounds)" >&2
for _ in $(seq 1 "$ROUNDS"); do
  row nginx-down "$(CONNECTIONS=8 wrk_once http://127.0.0.1:18501/big.bin)"
  row gatehouse-down "$(CONNECTIONS=8 wrk_once http://127.0.0.1:18503/big.bin -H "$AUTH")"
  row nginx-up "$(UPLOAD=$WORK/upload.bin CONNECTIONS=8 wrk_once http://127.0.0.1:18501/upload -s "$WORK/upload.lua")"
  row gatehouse-up "$(UPLOAD=$WORK/upload.bin CONNECTIONS=8 wrk_once http://127.0.0.1:18503/upload -s "$WORK/upload.lua" -H "$AUTH")"
done
# Peak RSS with 100 transfers at once (downloads, then uploads).
rss() { awk '/^VmHWM:/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }
RSS_BEFORE=$(awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$SIDECAR_PID/status")
CONNECTIONS=100 wrk_once http://127.0.0.1:18503/big.bin -H "$AUTH" >/dev/null
UPLOAD=$WORK/upload.bin CONNECTIONS=100 wrk_once http://127.0.0.1:18503/upload -s "$WORK/upload.lua" -H "$AUTH" >/dev/null
RSS_PEAK=$(rss "$SIDECAR_PID")

echo "2. the same handler, public and protected ($ROUNDS rounds)" >&2
for tls in false true; do
  if [ "$tls" = true ]; then pub=18511; scheme=https; else pub=18504; scheme=http; fi
  prot=$((pub + 1))
  control=$((pub + 2))
  start_gatehouse "$pub" "$tls" ""
  start_gatehouse "$prot" "$tls" '[auth]
public = []'
  start_gatehouse "$control" "$tls" ""
  curl -skf -H "$AUTH" "$scheme://127.0.0.1:$prot/healthz" >/dev/null
  [ "$(curl -sk -o /dev/null -w '%{http_code}' "$scheme://127.0.0.1:$prot/healthz")" = 401 ] || { echo "the protected server does not ask for a password" >&2; exit 1; }
  for round in $(seq 1 "$ROUNDS"); do
    # A second of unmeasured load first: every slice starts on a server
    # that has just run, not only those that follow themselves.
    hit() {
      SLICE=1s wrk_once "$scheme://127.0.0.1:$1/healthz" -H "$AUTH" >/dev/null
      wrk_once "$scheme://127.0.0.1:$1/healthz" -H "$AUTH"
    }
    a1=$(hit "$pub"); b1=$(hit "$prot"); c1=$(hit "$control")
    c2=$(hit "$control"); b2=$(hit "$prot"); a2=$(hit "$pub")
    # The round's figure for each: the mean of its two slices.
    a=$(mean_of "$a1" "$a2"); b=$(mean_of "$b1" "$b2"); c=$(mean_of "$c1" "$c2")
    row "same-$scheme-public" "$a"
    row "same-$scheme-auth" "$b"
    line="$scheme $(ratio_of "$b" "$a" 1 %.3f) $(ratio_of "$b" "$a" 3 %.2f) $(ratio_of "$c" "$a" 1 %.3f) $(ratio_of "$c" "$a" 3 %.2f)"
    echo "  $scheme round $round: auth/public, p99 auth/public, control/public, p99 control/public: ${line#* }" >&2
    PER_ROUND+="$line"$'\n'
  done
done

printf '\n| %-22s | %10s | %9s | %9s | %8s |\n' "row" "req/s" "p50 ms" "p99 ms" "MB/s"
printf '| %-22s | %10s | %9s | %9s | %8s |\n' "---" "---:" "---:" "---:" "---:"
for name in direct nginx-proxy caddy-proxy gatehouse-sidecar bare-hyper-pooled bare-hyper-dedicated bare-hyper-copoll nginx-down gatehouse-down nginx-up gatehouse-up same-http-public same-http-auth same-https-public same-https-auth; do
  [ -n "${ROWS[$name]:-}" ] || continue
  printf '| %-22s | %10s | %9s | %9s | %8s |\n' "$name" "$(col "$name" 1)" "$(col "$name" 2)" "$(col "$name" 3)" "$(col "$name" 4)"
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
echo
echo "sidecar / nginx proxy_pass:           $(ratio "$(col gatehouse-sidecar 1)" "$(col nginx-proxy 1)")   (target >= 1.0)"
need caddy && echo "sidecar / Caddy reverse_proxy:        $(ratio "$(col gatehouse-sidecar 1)" "$(col caddy-proxy 1)")"
echo "bare hyper proxy / nginx proxy_pass:  $(ratio "$(col bare-hyper-pooled 1)" "$(col nginx-proxy 1)") pooled, $(ratio "$(col bare-hyper-dedicated 1)" "$(col nginx-proxy 1)") dedicated, $(ratio "$(col bare-hyper-copoll 1)" "$(col nginx-proxy 1)") co-polled   (the floor: hyper with nothing else)"
echo "sidecar / bare hyper proxy (pooled):  $(ratio "$(col gatehouse-sidecar 1)" "$(col bare-hyper-pooled 1)")   (what auth, hygiene and accounting cost)"
echo
echo "CPU per proxied request, medians (user + kernel = total, microseconds):"
for name in nginx-proxy bare-hyper-pooled bare-hyper-dedicated bare-hyper-copoll gatehouse-sidecar; do
  awk -v n="$name" -v u="$(cpu_col "$name" 1)" -v k="$(cpu_col "$name" 2)" 'BEGIN { printf "  %-22s %6.2f + %6.2f = %6.2f\n", n, u, k, u + k }'
done
echo
echo "1 MiB download, gatehouse / nginx:    $(ratio "$(col gatehouse-down 4)" "$(col nginx-down 4)")   (target >= 0.9)"
# An upload's answer is a few bytes: its throughput is uploads/s x 1 MiB.
echo "1 MiB upload, gatehouse / nginx:      $(ratio "$(col gatehouse-up 1)" "$(col nginx-up 1)")   (target >= 0.9; MiB/s = uploads/s: $(col gatehouse-up 1) vs $(col nginx-up 1))"
echo "gatehouse RSS: $RSS_BEFORE MiB idle, $RSS_PEAK MiB peak with 100 transfers at once"
echo "auth / public per round (HTTP):       $(awk '$1 == "http" { printf "%s ", $2 }' <<<"$PER_ROUND")  (target >= 0.95 each)"
echo "control / public per round (HTTP):    $(awk '$1 == "http" { printf "%s ", $4 }' <<<"$PER_ROUND")  (two identical servers: the noise)"
echo "auth / public per round (TLS):        $(awk '$1 == "https" { printf "%s ", $2 }' <<<"$PER_ROUND")  (target >= 0.95 each)"
echo "control / public per round (TLS):     $(awk '$1 == "https" { printf "%s ", $4 }' <<<"$PER_ROUND")  (two identical servers: the noise)"
echo "p99 auth / public per round (TLS):    $(awk '$1 == "https" { printf "%s ", $3 }' <<<"$PER_ROUND")  (target <= 1.3)"
echo "p99 control / public per round (TLS): $(awk '$1 == "https" { printf "%s ", $5 }' <<<"$PER_ROUND")  (two identical servers: the noise)"
echo "p99 auth / public, medians (TLS):     $(awk -v a="$(col same-https-auth 3)" -v b="$(col same-https-public 3)" 'BEGIN { printf "%.2f", a / b }')  (target <= 1.3)"
