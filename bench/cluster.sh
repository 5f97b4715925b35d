#!/usr/bin/env bash
# Shared state in Redis ([cluster]) against in-process state, in one run:
#
#   bash bench/cluster.sh        # DURATION=10 seconds per row, ROUNDS=5
#
# 1. Throughput: one replica, authenticated (cached) requests, with the
#    limits in process and with them in Redis, in alternating rounds
#    (medians). Twice: with the default counting (a request whose
#    credentials were verified before is not counted, so it never waits for
#    or talks to Redis), and with every request counted against the
#    per-address rate and a per-user quota (`count_verified = true`,
#    `per_user` on): each request then queues two GCRA checks for Redis.
# 2. A wrong-password flood from one address spread over three replicas
#    for FLOOD seconds: argon2 verifications done for the attacker in all,
#    without Redis (each replica locks out alone) and with it.
#
# gatehouse runs on CPU 0, wrk and redis-server on CPU 1. Every server is
# started here on a high loopback port and stopped by PID at exit.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-5}
FLOOD=${FLOOD:-5}
CONNECTIONS=${CONNECTIONS:-32}
# shellcheck source=bench/lib.sh
source bench/lib.sh

install_missing wrk wrk redis-server redis-server
need wrk || { echo "wrk is required (apt-get install wrk)" >&2; exit 1; }
need redis-server || { echo "redis-server is required (apt-get install redis-server)" >&2; exit 1; }
build_gatehouse
head -c 32 /dev/urandom | base64 >"$WORK/cluster-secret"
chmod 600 "$WORK/cluster-secret"

REDIS_PORT=16379
taskset -c 1 redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no >/dev/null 2>&1 &
PIDS+=($!)
wait_port "$REDIS_PORT"

declare -A RPS P50 P99
SLICE="$(awk -v d="$DURATION" -v r="$ROUNDS" 'BEGIN { s = d / r; if (s < 1) s = 1; printf "%ds", s }')"
record() {
  local name=$1 rows
  rows=$(cat)
  RPS[$name]=$(awk '{ print $1 }' <<<"$rows" | median)
  P50[$name]=$(awk '{ print $2 }' <<<"$rows" | median)
  P99[$name]=$(awk '{ print $3 }' <<<"$rows" | median)
}

config() { # port counting(default|every) cluster(yes|no) prefix [metrics port]
  local file="$WORK/gatehouse-$1.toml"
  cat >"$file" <<TOML
[server]
listen = "127.0.0.1:$1"
[tls]
enabled = false
[users]
bench = "$HASH"
[lockout]
max_failures = 5
window = "10m"
duration = "10m"
TOML
  if [ "$2" = every ]; then
    # Rates high enough never to refuse the benchmark's own traffic.
    printf '[rate_limit]\nper_ip = { per_second = 1000000, burst = 1000000 }\nper_user = { per_second = 1000000, burst = 1000000 }\ncount_verified = true\n' >>"$file"
  else
    printf '[rate_limit]\nper_ip = { per_second = 1000000, burst = 1000000 }\n' >>"$file"
  fi
  [ "$3" = yes ] && printf '[cluster]\nredis = "redis://127.0.0.1:%s/0"\nsecret_file = "%s"\nprefix = "%s"\n' "$REDIS_PORT" "$WORK/cluster-secret" "$4" >>"$file"
  [ -n "${5:-}" ] && printf '[metrics]\nlisten = "127.0.0.1:%s"\n' "$5" >>"$file"
  echo "$file"
}
start() { # config file, port
  RUST_LOG=${RUST_LOG:-warn} taskset -c 0 "$GATEHOUSE" serve --config "$1" 2>>"$WORK/gatehouse.log" >/dev/null &
  PIDS+=($!)
  wait_port "$2"
  curl -sf -H "$AUTH" "http://127.0.0.1:$2/api/whoami" >/dev/null
}
stop_all_but_redis() {
  while [ "${#PIDS[@]}" -gt 1 ]; do
    local pid=${PIDS[-1]}
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    unset 'PIDS[-1]'
  done
}

for counting in default every; do
  echo "one replica, $counting counting: limits in process vs in Redis ($ROUNDS x $SLICE per row)" >&2
  start "$(config 18200 "$counting" no "")" 18200
  start "$(config 18201 "$counting" yes "bench-$counting")" 18201
  r_local="" r_redis=""
  for _ in $(seq 1 "$ROUNDS"); do
    r_local+="$(wrk_once http://127.0.0.1:18200/api/whoami -H "$AUTH")"$'\n'
    r_redis+="$(wrk_once http://127.0.0.1:18201/api/whoami -H "$AUTH")"$'\n'
  done
  record "$counting-local" <<<"${r_local%$'\n'}"
  record "$counting-redis" <<<"${r_redis%$'\n'}"
  stop_all_but_redis
done

# The flood: wrong passwords (a new one each time, so none is coalesced)
# from 127.0.0.1, spread round-robin over three replicas by 6 workers.
flood() { # cluster(yes|no): prints the attacker's verifications in all
  local ports=(18210 18211 18212) metrics=(18220 18221 18222) i total=0
  for i in 0 1 2; do
    start "$(config "${ports[$i]}" default "$1" bench-flood "${metrics[$i]}")" "${ports[$i]}"
  done
  local end=$((SECONDS + FLOOD)) workers=()
  for worker in $(seq 1 6); do
    (
      n=0
      while [ $SECONDS -lt $end ]; do
        port=${ports[$(((n + worker) % 3))]}
        curl -s -o /dev/null -u "bench:wrong-$worker-$n" "http://127.0.0.1:$port/api/whoami" || true
        n=$((n + 1))
      done
    ) &
    workers+=($!)
  done
  wait "${workers[@]}" 2>/dev/null || true
  for i in 0 1 2; do
    local failed
    failed=$(curl -s "http://127.0.0.1:${metrics[$i]}/metrics" | awk '$1 == "gatehouse_argon2_failed_verifications_total" { print $2 }')
    total=$((total + ${failed:-0}))
  done
  stop_all_but_redis
  echo "$total"
}
echo "flood: three replicas, one attacking address, ${FLOOD}s" >&2
FLOOD_LOCAL=$(flood no)
FLOOD_REDIS=$(flood yes)

printf '\n| %-28s | %10s | %9s | %9s |\n' "one replica, (cached) auth" "req/s" "p50 ms" "p99 ms"
printf '| %-28s | %10s | %9s | %9s |\n' "---" "---:" "---:" "---:"
for name in default-local default-redis every-local every-redis; do
  printf '| %-28s | %10s | %9s | %9s |\n' "$name" "${RPS[$name]}" "${P50[$name]}" "${P99[$name]}"
done
ratio() { awk -v a="${RPS[$1]}" -v b="${RPS[$2]}" 'BEGIN { printf "%.2f", a / b }'; }
echo
echo "Redis / in process, default counting:      $(ratio default-redis default-local)   (target >= 0.5)"
echo "Redis / in process, every request counted: $(ratio every-redis every-local)   (target >= 0.5)"
echo "flood over 3 replicas, attacker's argon2 verifications: without Redis $FLOOD_LOCAL, with Redis $FLOOD_REDIS   (max_failures = 5)"
