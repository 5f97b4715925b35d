# Shared by the bench/*.sh scripts (sourced from the repository root, after
# `set -euo pipefail`): a work directory and the PIDs of the servers a
# script starts (stopped at exit), a random bench password with its Basic
# header, tool installation, the release build, and wrk runs.

PASSWORD="bench-$(head -c 12 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')"
AUTH="Authorization: Basic $(printf 'bench:%s' "$PASSWORD" | base64 -w0)"
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
# Debian puts nginx in /usr/sbin.
export PATH="$PATH:/usr/sbin"

need() { command -v "$1" >/dev/null 2>&1; }

# install_missing command package [command package ...]: apt-get installs
# the packages of missing commands when run as root (a peer that cannot be
# installed is skipped by the script, not faked).
install_missing() {
  local packages=()
  while [ $# -ge 2 ]; do
    need "$1" || packages+=("$2")
    shift 2
  done
  if [ ${#packages[@]} -gt 0 ] && [ "$(id -u)" = 0 ]; then
    apt-get update -qq >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}" >/dev/null 2>&1 || true
  fi
}

# The release binary (honouring CARGO_TARGET_DIR) and the bench user's hash.
build_gatehouse() {
  cargo build --release --quiet --bin gatehouse
  GATEHOUSE=${CARGO_TARGET_DIR:-$PWD/target}/release/gatehouse
  HASH=$(printf '%s\n' "$PASSWORD" | "$GATEHOUSE" hash-password)
}

# start_nginx name port <<NGINX ... NGINX: a one-worker nginx on CPU 0 with
# the standard input inside `http { }`, no access log and its temp files
# under $WORK (nginx wants writable temp folders even when it never buffers
# anything); stopped at exit like every server here.
start_nginx() {
  local name=$1 port=$2 body
  body=$(cat)
  cat >"$WORK/$name.conf" <<NGINX
worker_processes 1;
daemon off;
pid $WORK/$name.pid;
error_log $WORK/$name-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $WORK; proxy_temp_path $WORK; fastcgi_temp_path $WORK; uwsgi_temp_path $WORK; scgi_temp_path $WORK;
$body
}
NGINX
  taskset -c 0 nginx -c "$WORK/$name.conf" -e "$WORK/$name-error.log" &
  PIDS+=($!)
  wait_port "$port"
}

wait_port() {
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on port $1" >&2
  return 1
}

to_ms() { # wrk prints 1.23ms, 456.00us or 1.20s
  awk -v v="$1" 'BEGIN { if (v ~ /us$/) printf "%.3f", v / 1000; else if (v ~ /ms$/) printf "%.3f", v + 0; else if (v ~ /s$/) printf "%.3f", v * 1000; else print v }'
}

# wrk_once url [wrk args...]: one run of $SLICE with $CONNECTIONS on CPU 1;
# prints "req/s p50_ms p99_ms MB/s".
wrk_once() {
  local url=$1 out non2xx
  shift
  out=$(taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d"$SLICE" --latency "$@" "$url")
  non2xx=$(awk '/Non-2xx/ { print $NF }' <<<"$out")
  [ -z "$non2xx" ] || echo "warning: $url had $non2xx non-2xx answers" >&2
  printf '%s %s %s %s\n' "$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' <<<"$out")" \
    "$(to_ms "$(awk '$1 == "50%" { print $2 }' <<<"$out")")" \
    "$(to_ms "$(awk '$1 == "99%" { print $2 }' <<<"$out")")" \
    "$(awk '/^Transfer\/sec:/ { v = $2; if (v ~ /GB$/) v *= 1024; else if (v ~ /KB$/) v /= 1024; printf "%.1f", v }' <<<"$out")"
}

# The field-by-field mean of two wrk_once lines (req/s as a whole number).
mean_of() { paste -d' ' <(tr ' ' '\n' <<<"$1") <(tr ' ' '\n' <<<"$2") | awk '{ printf (NR == 1 ? "%.0f" : " %.3f"), ($1 + $2) / 2 } END { print "" }'; }

median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
