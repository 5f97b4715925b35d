#!/usr/bin/env bash
# Throughput and latency of gatehouse beside nginx auth_basic and Caddy
# basicauth, measured in one run on this machine.
#
#   bash bench/compare.sh            # DURATION=10 seconds per row by default
#
# The server under test is pinned to CPU 0 and wrk to CPU 1; every server is
# started by this script on a high loopback port and stopped by PID when the
# script exits. nginx, Caddy, wrk and htpasswd are installed with apt-get when
# missing (as root); a peer that cannot be installed is skipped, not faked.
# Rate limits are off for gatehouse here: all load comes from one address.
# Access logs are off for all three (nginx access_log off, Caddy log discard,
# gatehouse RUST_LOG=warn), so each row measures serving, not log writing.
# Each pair of rows that is compared (public vs authenticated) is measured in
# ROUNDS alternating rounds and the median is reported, so that drift on a
# shared machine does not favour whichever ran first.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-15}
ROUNDS=${ROUNDS:-5}
CONNECTIONS=${CONNECTIONS:-32}
# shellcheck source=bench/lib.sh
source bench/lib.sh

install_missing wrk wrk nginx nginx-light caddy caddy htpasswd apache2-utils
need wrk || { echo "wrk is required (apt-get install wrk)" >&2; exit 1; }
build_gatehouse

# Rows: name, req/s, p50, p99 (ms).
declare -A RPS P50 P99
record() { # name, then lines of "req/s p50 p99"
  local name=$1 rows
  rows=$(cat)
  RPS[$name]=$(awk '{ print $1 }' <<<"$rows" | median)
  P50[$name]=$(awk '{ print $2 }' <<<"$rows" | median)
  P99[$name]=$(awk '{ print $3 }' <<<"$rows" | median)
}
# Runs two rows in alternating rounds: name_a url_a name_b url_b (b with auth).
run_pair() {
  local a=$1 url_a=$2 b=$3 url_b=$4 header_b=$5 ra="" rb=""
  for _ in $(seq 1 "$ROUNDS"); do
    ra+="$(wrk_once "$url_a")"$'\n'
    rb+="$(wrk_once "$url_b" -H "$header_b")"$'\n'
  done
  record "$a" <<<"${ra%$'\n'}"
  record "$b" <<<"${rb%$'\n'}"
}
# Runs rows in alternating rounds, each with the bench user's header:
# name url [name url ...].
run_rows() {
  local -A runs=()
  local names=() urls=() i
  while [ $# -ge 2 ]; do
    names+=("$1") urls+=("$2")
    shift 2
  done
  for _ in $(seq 1 "$ROUNDS"); do
    for i in "${!names[@]}"; do
      runs[${names[$i]}]+="$(wrk_once "${urls[$i]}" -H "$AUTH")"$'\n'
    done
  done
  for i in "${!names[@]}"; do
    record "${names[$i]}" <<<"${runs[${names[$i]}]%$'\n'}"
  done
}
SLICE="$(awk -v d="$DURATION" -v r="$ROUNDS" 'BEGIN { s = d / r; if (s < 1) s = 1; printf "%ds", s }')"

gatehouse_config() { # port tls(true|false)
  local tls_section='[tls]
self_signed = true'
  [ "$2" = true ] || tls_section='[tls]
enabled = false'
  cat >"$WORK/gatehouse-$1.toml" <<TOML
[server]
listen = "127.0.0.1:$1"
$tls_section
[users]
bench = "$HASH"
[rate_limit]
per_ip = false
per_user = false
TOML
  echo "$WORK/gatehouse-$1.toml"
}

start_gatehouse() { # port tls
  local config
  config=$(gatehouse_config "$1" "$2")
  RUST_LOG=${RUST_LOG:-warn} taskset -c 0 "$GATEHOUSE" serve --config "$config" 2>>"$WORK/gatehouse.log" >/dev/null &
  PIDS+=($!)
  wait_port "$1"
}

stop_last() {
  local pid=${PIDS[-1]}
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  unset 'PIDS[-1]'
}

echo "gatehouse: plain HTTP and TLS ($ROUNDS x $SLICE per row, $CONNECTIONS connections, server on CPU 0, wrk on CPU 1)" >&2
start_gatehouse 18080 false
[ "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:18080/api/whoami)" = 401 ] || { echo "gatehouse does not ask for a password" >&2; exit 1; }
curl -sf -H "$AUTH" http://127.0.0.1:18080/api/whoami >/dev/null # warm the cache, as a user's first request would
run_pair gatehouse-http-public http://127.0.0.1:18080/healthz gatehouse-http-auth http://127.0.0.1:18080/api/whoami "$AUTH"
stop_last

start_gatehouse 18443 true
curl -sfk -H "$AUTH" https://127.0.0.1:18443/api/whoami >/dev/null
run_pair gatehouse-tls-public https://127.0.0.1:18443/healthz gatehouse-tls-auth https://127.0.0.1:18443/api/whoami "$AUTH"
stop_last

echo "gatehouse: Basic (cached) vs bearer JWT vs API key, and login (HTTP)" >&2
config=$(gatehouse_config 18086 false)
API_KEY=$("$GATEHOUSE" api-key create --user bench --name bench --file "$WORK/api-keys")
printf '[tokens]\nenabled = true\nephemeral_key = true\n[api_keys]\nfile = "%s"\n' "$WORK/api-keys" >>"$config"
# An OAuth client whose secret is the bench password (same hash).
printf '[oauth]\nenabled = true\n[oauth.clients.bench-client]\nsecret = "%s"\ngrant_types = ["client_credentials"]\nscopes = ["read"]\n' "$HASH" >>"$config"
RUST_LOG=${RUST_LOG:-warn} taskset -c 0 "$GATEHOUSE" serve --config "$config" 2>>"$WORK/gatehouse.log" >/dev/null &
PIDS+=($!)
wait_port 18086
LOGIN_BODY="{\"username\":\"bench\",\"password\":\"$PASSWORD\"}"
TOKEN=$(curl -sf -H 'Content-Type: application/json' -d "$LOGIN_BODY" http://127.0.0.1:18086/api/auth/jwt | sed 's/.*"access_token":"\([^"]*\)".*/\1/')
for header in "$AUTH" "Authorization: Bearer $TOKEN" "Authorization: Bearer $API_KEY"; do
  [ "$(curl -s -o /dev/null -w '%{http_code}' -H "$header" http://127.0.0.1:18086/api/whoami)" = 200 ] || { echo "a credential was refused" >&2; exit 1; }
done
r_public="" r_basic="" r_bearer="" r_key=""
for _ in $(seq 1 "$ROUNDS"); do
  r_public+="$(wrk_once http://127.0.0.1:18086/healthz)"$'\n'
  r_basic+="$(wrk_once http://127.0.0.1:18086/api/whoami -H "$AUTH")"$'\n'
  r_bearer+="$(wrk_once http://127.0.0.1:18086/api/whoami -H "Authorization: Bearer $TOKEN")"$'\n'
  r_key+="$(wrk_once http://127.0.0.1:18086/api/whoami -H "Authorization: Bearer $API_KEY")"$'\n'
done
record tokens-public <<<"${r_public%$'\n'}"
record tokens-basic-cached <<<"${r_basic%$'\n'}"
record tokens-bearer-jwt <<<"${r_bearer%$'\n'}"
record tokens-api-key <<<"${r_key%$'\n'}"
# Login: a correct password (the verified-credentials cache answers it, as
# for a client that logs in again) and a freshly signed token per request.
cat >"$WORK/login.lua" <<LUA
wrk.method = "POST"
wrk.body = '$LOGIN_BODY'
wrk.headers["Content-Type"] = "application/json"
LUA
record tokens-login <<<"$(wrk_once http://127.0.0.1:18086/api/auth/jwt -s "$WORK/login.lua")"
# OAuth client credentials: the secret cached after the first request, a
# freshly signed token each time.
cat >"$WORK/oauth.lua" <<LUA
wrk.method = "POST"
wrk.body = "grant_type=client_credentials"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = "Basic $(printf 'bench-client:%s' "$PASSWORD" | base64 -w0)"
LUA
curl -sf -H "Authorization: Basic $(printf 'bench-client:%s' "$PASSWORD" | base64 -w0)" -d grant_type=client_credentials http://127.0.0.1:18086/oauth/token >/dev/null \
  || { echo "the OAuth client was refused" >&2; exit 1; }
record tokens-oauth-cc <<<"$(wrk_once http://127.0.0.1:18086/oauth/token -s "$WORK/oauth.lua")"
stop_last

echo "gatehouse: the same handler, public in one server and protected in the other (HTTP and TLS)" >&2
# Issue 16's measure of what authentication costs: the same handler
# (/healthz), public in one config (the default) and protected in the other
# (no public paths), so the two rows differ by authentication alone.
# All three get the same request, Authorization header included.
# A third server, public like the first (the A/A control), measures how far
# two identical servers drift apart in one round: the resolution of any
# per-round ratio on this machine. A round runs public, protected, control,
# control, protected, public (half a slice each, rounded up), so that a drift
# in the machine's speed within the round weighs on all three alike.
declare -A PER_ROUND_AB PER_ROUND_AA
for tls in false true; do
  # Ports: 18094/18095 (control 18100) over HTTP, 18096/18097 (18101) over TLS.
  if [ "$tls" = true ]; then pub=18096 ctl=18101; else pub=18094 ctl=18100; fi
  prot=$((pub + 1))
  for port in $pub $prot $ctl; do
    config=$(gatehouse_config "$port" "$tls")
    [ "$port" = "$prot" ] && sed -i 's|^\[users\]|[auth]\npublic = []\n[users]|' "$config"
    RUST_LOG=${RUST_LOG:-warn} taskset -c 0 "$GATEHOUSE" serve --config "$config" 2>>"$WORK/gatehouse.log" >/dev/null &
    PIDS+=($!)
    wait_port "$port"
  done
  scheme=http
  [ "$tls" = true ] && scheme=https
  [ "$(curl -sk -o /dev/null -w '%{http_code}' "$scheme://127.0.0.1:$prot/healthz")" = 401 ] || { echo "the protected server does not ask for a password" >&2; exit 1; }
  curl -skf -H "$AUTH" "$scheme://127.0.0.1:$prot/healthz" >/dev/null
  r_pub="" r_prot="" ab="" aa=""
  half="$(( (${SLICE%s} + 1) / 2 ))s"
  # A second of unmeasured load first, so that no slice starts colder
  # than another (a server that follows itself in the order starts warm).
  hit() {
    SLICE=1s wrk_once "$scheme://127.0.0.1:$1/healthz" -H "$AUTH" >/dev/null
    SLICE=$half wrk_once "$scheme://127.0.0.1:$1/healthz" -H "$AUTH"
  }
  for _ in $(seq 1 "$ROUNDS"); do
    a1=$(hit "$pub"); b1=$(hit "$prot"); c1=$(hit "$ctl")
    c2=$(hit "$ctl"); b2=$(hit "$prot"); a2=$(hit "$pub")
    a=$(mean_of "$a1" "$a2"); b=$(mean_of "$b1" "$b2"); c=$(mean_of "$c1" "$c2")
    r_pub+="$a"$'\n' r_prot+="$b"$'\n'
    ab+="$(awk -v a="${a%% *}" -v b="${b%% *}" 'BEGIN { printf "%.3f ", b / a }')"
    aa+="$(awk -v a="${a%% *}" -v c="${c%% *}" 'BEGIN { printf "%.3f ", c / a }')"
  done
  record "same-$scheme-public" <<<"${r_pub%$'\n'}"
  record "same-$scheme-auth" <<<"${r_prot%$'\n'}"
  PER_ROUND_AB[$scheme]=${ab% } PER_ROUND_AA[$scheme]=${aa% }
  stop_last
  stop_last
  stop_last
done

echo "gatehouse: 100 access rules vs none (HTTP, Basic cached)" >&2
start_gatehouse 18092 false
config=$(gatehouse_config 18093 false)
printf '[groups]\nstaff = ["bench"]\n' >>"$config"
# 100 rules the request path does not match: every request scans them all,
# then the default lets it in (the worst case for a request that passes).
for i in $(seq 1 100); do
  printf '[[access]]\npath = "/area%d/*"\nallow = ["group:staff"]\n' "$i" >>"$config"
done
RUST_LOG=${RUST_LOG:-warn} taskset -c 0 "$GATEHOUSE" serve --config "$config" 2>>"$WORK/gatehouse.log" >/dev/null &
PIDS+=($!)
wait_port 18093
curl -sf -H "$AUTH" http://127.0.0.1:18092/api/whoami >/dev/null
curl -sf -H "$AUTH" http://127.0.0.1:18093/api/whoami >/dev/null
r_none="" r_rules=""
for _ in $(seq 1 "$ROUNDS"); do
  r_none+="$(wrk_once http://127.0.0.1:18092/api/whoami -H "$AUTH")"$'\n'
  r_rules+="$(wrk_once http://127.0.0.1:18093/api/whoami -H "$AUTH")"$'\n'
done
record rules-none <<<"${r_none%$'\n'}"
record rules-100 <<<"${r_rules%$'\n'}"
stop_last
stop_last

echo "gatehouse: cold-start burst ($CONNECTIONS connections, empty cache)" >&2
start_gatehouse 18081 false
SAVED_SLICE=$SLICE SLICE=2s
record gatehouse-cold-burst <<<"$(wrk_once http://127.0.0.1:18081/api/whoami -H "$AUTH")"
SLICE=$SAVED_SLICE
COLD_VERIFICATIONS=$(curl -sf -H "$AUTH" http://127.0.0.1:18081/api/stats | sed 's/.*"verifications":\([0-9]*\).*/\1/')
stop_last


if need nginx && need htpasswd; then
  echo "nginx auth_basic (bcrypt)" >&2
  htpasswd -bBc "$WORK/htpasswd" bench "$PASSWORD" 2>/dev/null
  mkdir -p "$WORK/www" && echo ok >"$WORK/www/open" && echo ok >"$WORK/www/auth"
  start_nginx nginx 18082 <<NGINX
  server {
    listen 127.0.0.1:18082;
    # Static files, not a return directive: return answers in the rewrite
    # phase, before auth_basic (access phase) would ever run.
    root $WORK/www;
    location = /open { }
    location = /auth { auth_basic "bench"; auth_basic_user_file $WORK/htpasswd; }
  }
NGINX
  [ "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:18082/auth)" = 401 ] || { echo "nginx does not ask for a password" >&2; exit 1; }
  run_pair nginx-public http://127.0.0.1:18082/open nginx-auth http://127.0.0.1:18082/auth "$AUTH"
  stop_last
else
  echo "nginx or htpasswd not installed: skipped" >&2
fi

if need caddy; then
  echo "Caddy basicauth (bcrypt)" >&2
  CADDY_HASH=$(caddy hash-password --plaintext "$PASSWORD")
  cat >"$WORK/Caddyfile" <<CADDY
{
  admin off
  auto_https off
}
http://127.0.0.1:18083 {
  log {
    output discard
  }
  basicauth /auth* {
    bench $CADDY_HASH
  }
  respond "ok"
}
CADDY
  XDG_DATA_HOME=$WORK XDG_CONFIG_HOME=$WORK taskset -c 0 caddy run --config "$WORK/Caddyfile" --adapter caddyfile >"$WORK/caddy.log" 2>&1 &
  PIDS+=($!)
  wait_port 18083
  [ "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:18083/auth)" = 401 ] || { echo "Caddy does not ask for a password" >&2; exit 1; }
  curl -sf -H "$AUTH" http://127.0.0.1:18083/auth >/dev/null
  run_pair caddy-public http://127.0.0.1:18083/open caddy-auth http://127.0.0.1:18083/auth "$AUTH"
  stop_last
else
  echo "caddy not installed: skipped" >&2
fi

if need nginx; then
  # Forward auth: nginx auth_request asking gatehouse (both on CPU 0), in
  # front of the same static file nginx auth_basic serves above. Rows, in
  # alternating rounds:
  #   nginx-fa-public     nginx alone, no auth_request (its ceiling)
  #   nginx-forward-auth  gatehouse on TCP, default settings
  #   nginx-fa-unix-batch gatehouse on a Unix socket with cpu_scheduling =
  #                       "batch" (the setup the README recommends)
  #   nginx-fa-stub       nginx asking a stub that answers 200 to everything
  #                       (nginx `return 200` on a Unix socket): the floor
  #                       of auth_request itself, what no authorizer beats
  #   caddy-auth-beside   Caddy basicauth again, in the same rotation
  echo "nginx + gatehouse forward auth" >&2
  config=$(gatehouse_config 18089 false)
  printf '[forward_auth]\nlisten = "127.0.0.1:18088"\n' >>"$config"
  RUST_LOG=${RUST_LOG:-warn} taskset -c 0 "$GATEHOUSE" serve --config "$config" 2>>"$WORK/gatehouse.log" >/dev/null &
  PIDS+=($!)
  wait_port 18088
  config=$(gatehouse_config 18098 false)
  sed -i 's/^listen = "127.0.0.1:18098"$/&\ncpu_scheduling = "batch"/' "$config"
  # nginx's workers run as nobody here: the socket is opened to everyone
  # (in production, give nginx's user the socket's group instead). Its own
  # folder: nginx hands $WORK, its temp path, to its worker user, and
  # gatehouse refuses a socket in a folder another user may write to.
  mkdir -p "$WORK/sock"
  printf '[forward_auth]\nlisten = "unix:%s/sock/authz.sock"\nsocket_mode = "666"\n' "$WORK" >>"$config"
  RUST_LOG=${RUST_LOG:-warn} taskset -c 0 "$GATEHOUSE" serve --config "$config" 2>>"$WORK/gatehouse.log" >/dev/null &
  PIDS+=($!)
  wait_port 18098
  start_nginx stub 18099 <<NGINX
  server { listen 127.0.0.1:18099; listen unix:$WORK/stub.sock; location / { return 200; } }
NGINX
  mkdir -p "$WORK/www" && echo ok >"$WORK/www/open" && for f in auth auth-unix auth-stub; do echo ok >"$WORK/www/$f"; done
  decision() { # location, upstream
    cat <<LOCATION
    location = $1 {
      internal;
      proxy_pass http://$2/authz;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Original-URI \$request_uri;
      proxy_set_header X-Original-Method \$request_method;
      proxy_set_header X-Forwarded-For \$remote_addr;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
LOCATION
  }
  start_nginx nginx-fa 18087 <<NGINX
  upstream gatehouse_tcp { server 127.0.0.1:18088; keepalive 64; }
  upstream gatehouse_unix { server unix:$WORK/sock/authz.sock; keepalive 64; }
  upstream stub { server unix:$WORK/stub.sock; keepalive 64; }
  server {
    listen 127.0.0.1:18087;
    root $WORK/www;
    location = /open { }
    location = /auth { auth_request /authz-tcp; }
    location = /auth-unix { auth_request /authz-unix; }
    location = /auth-stub { auth_request /authz-stub; }
$(decision /authz-tcp gatehouse_tcp)
$(decision /authz-unix gatehouse_unix)
$(decision /authz-stub stub)
  }
NGINX
  for path in auth auth-unix; do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:18087/$path")" = 401 ] || { echo "nginx + gatehouse ($path) does not ask for a password" >&2; exit 1; }
    curl -sf -H "$AUTH" "http://127.0.0.1:18087/$path" >/dev/null
  done
  beside=()
  if need caddy; then
    XDG_DATA_HOME=$WORK XDG_CONFIG_HOME=$WORK taskset -c 0 caddy run --config "$WORK/Caddyfile" --adapter caddyfile >>"$WORK/caddy.log" 2>&1 &
    PIDS+=($!)
    wait_port 18083
    # One request first: Caddy caches a password only once it has checked
    # it, and 32 connections at once would each run bcrypt.
    curl -sf -H "$AUTH" http://127.0.0.1:18083/auth >/dev/null
    beside=(caddy-auth-beside http://127.0.0.1:18083/auth)
  fi
  run_rows nginx-fa-public http://127.0.0.1:18087/open nginx-forward-auth http://127.0.0.1:18087/auth \
    nginx-fa-unix-batch http://127.0.0.1:18087/auth-unix nginx-fa-stub http://127.0.0.1:18087/auth-stub "${beside[@]}"
  need caddy && stop_last
  stop_last
  stop_last
  stop_last
  stop_last
fi

if need nginx; then
  # Sidecar cost: the same load against an upstream (nginx serving a small
  # file) directly, and through gatehouse with authentication. Both servers
  # share CPU 0, so the proxied rows pay for both hops on one core.
  echo "gatehouse as a reverse proxy in front of nginx" >&2
  mkdir -p "$WORK/app" && echo '{"hello":"app"}' >"$WORK/app/data.json"
  start_nginx upstream 18084 <<NGINX
  keepalive_requests 1000000;
  server { listen 127.0.0.1:18084; root $WORK/app; }
NGINX
  config=$(gatehouse_config 18085 false)
  printf '[upstream]\nurl = "http://127.0.0.1:18084"\n' >>"$config"
  RUST_LOG=${RUST_LOG:-warn} taskset -c 0 "$GATEHOUSE" serve --config "$config" 2>>"$WORK/gatehouse.log" >/dev/null &
  PIDS+=($!)
  wait_port 18085
  curl -sf -H "$AUTH" http://127.0.0.1:18085/data.json >/dev/null
  # The same upstream behind nginx proxy_pass (upstream keep-alive) and
  # Caddy reverse_proxy, also on CPU 0: what a sidecar is measured against.
  start_nginx proxy 18090 <<NGINX
  keepalive_requests 1000000;
  upstream app { server 127.0.0.1:18084; keepalive 64; }
  server {
    listen 127.0.0.1:18090;
    location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
NGINX
  r_direct="" r_nginx="" r_caddy="" r_gatehouse=""
  if need caddy; then
    printf '{\n  admin off\n  auto_https off\n}\nhttp://127.0.0.1:18091 {\n  log {\n    output discard\n  }\n  reverse_proxy 127.0.0.1:18084\n}\n' >"$WORK/Caddyfile-proxy"
    XDG_DATA_HOME=$WORK XDG_CONFIG_HOME=$WORK taskset -c 0 caddy run --config "$WORK/Caddyfile-proxy" --adapter caddyfile >"$WORK/caddy-proxy.log" 2>&1 &
    PIDS+=($!)
    wait_port 18091
  fi
  for _ in $(seq 1 "$ROUNDS"); do
    r_direct+="$(wrk_once http://127.0.0.1:18084/data.json)"$'\n'
    r_nginx+="$(wrk_once http://127.0.0.1:18090/data.json)"$'\n'
    need caddy && r_caddy+="$(wrk_once http://127.0.0.1:18091/data.json)"$'\n'
    r_gatehouse+="$(wrk_once http://127.0.0.1:18085/data.json -H "$AUTH")"$'\n'
  done
  record upstream-direct <<<"${r_direct%$'\n'}"
  record nginx-proxy-pass <<<"${r_nginx%$'\n'}"
  [ -n "$r_caddy" ] && record caddy-reverse-proxy <<<"${r_caddy%$'\n'}"
  record gatehouse-proxy-auth <<<"${r_gatehouse%$'\n'}"
  need caddy && stop_last
  stop_last
  stop_last
  stop_last
fi

printf '\n| %-22s | %10s | %9s | %9s |\n' "server / route" "req/s" "p50 ms" "p99 ms"
printf '| %-22s | %10s | %9s | %9s |\n' "---" "---:" "---:" "---:"
for name in gatehouse-http-public gatehouse-http-auth gatehouse-tls-public gatehouse-tls-auth tokens-public tokens-basic-cached tokens-bearer-jwt tokens-api-key tokens-login tokens-oauth-cc same-http-public same-http-auth same-https-public same-https-auth rules-none rules-100 gatehouse-cold-burst nginx-public nginx-auth caddy-public caddy-auth nginx-fa-public nginx-forward-auth nginx-fa-unix-batch nginx-fa-stub caddy-auth-beside upstream-direct nginx-proxy-pass caddy-reverse-proxy gatehouse-proxy-auth; do
  [ -n "${RPS[$name]:-}" ] || continue
  printf '| %-22s | %10s | %9s | %9s |\n' "$name" "${RPS[$name]}" "${P50[$name]}" "${P99[$name]}"
done
ratio() { [ -n "${RPS[$1]:-}" ] && [ -n "${RPS[$2]:-}" ] && awk -v a="${RPS[$1]}" -v b="${RPS[$2]}" 'BEGIN { printf "%.2f", a / b }' || echo "n/a"; }
p99ratio() { awk -v a="${P99[$1]}" -v b="${P99[$2]}" 'BEGIN { printf "%.2f", a / b }'; }
echo
echo "gatehouse-auth / gatehouse-public (HTTP):  $(ratio gatehouse-http-auth gatehouse-http-public)   (target >= 0.95)"
echo "gatehouse-auth / gatehouse-public (TLS):   $(ratio gatehouse-tls-auth gatehouse-tls-public)"
echo "p99 auth / p99 public (TLS):               $(p99ratio gatehouse-tls-auth gatehouse-tls-public)   (target <= 1.10)"
echo "gatehouse-auth / caddy-auth (HTTP):        $(ratio gatehouse-http-auth caddy-auth)   (target >= 2.5)"
# Caddy measured in the forward-auth rotation when it could be, else its own pair.
FA_CADDY=caddy-auth-beside
[ -n "${RPS[$FA_CADDY]:-}" ] || FA_CADDY=caddy-auth
echo "nginx+forward-auth / caddy-auth (HTTP):    $(ratio nginx-forward-auth $FA_CADDY)   (TCP, default scheduling)"
echo "nginx+forward-auth / nginx-auth (HTTP):    $(ratio nginx-forward-auth nginx-auth)   (TCP, default scheduling)"
echo "nginx+fa unix+batch / caddy-auth (HTTP):   $(ratio nginx-fa-unix-batch $FA_CADDY)   (target >= 1.0)"
echo "nginx+fa unix+batch / nginx-auth (HTTP):   $(ratio nginx-fa-unix-batch nginx-auth)   (target >= 50)"
echo "nginx+fa unix+batch / nginx+stub (HTTP):   $(ratio nginx-fa-unix-batch nginx-fa-stub)   (1.0: as cheap as no check at all)"
echo "gatehouse-auth / nginx-auth (HTTP):        $(ratio gatehouse-http-auth nginx-auth)"
echo "bearer JWT / Basic cached (HTTP):          $(ratio tokens-bearer-jwt tokens-basic-cached)   (target >= 0.95)"
echo "API key / Basic cached (HTTP):             $(ratio tokens-api-key tokens-basic-cached)   (target >= 0.95)"
echo "login p50 / p99 (ms):                      ${P50[tokens-login]:-n/a} / ${P99[tokens-login]:-n/a}"
echo "same handler, protected / public (HTTP):   $(ratio same-http-auth same-http-public)   (target >= 0.95)"
echo "same handler, protected / public (TLS):    $(ratio same-https-auth same-https-public)   (target >= 0.95)"
echo "same handler, p99 protected / public (TLS): $(p99ratio same-https-auth same-https-public)   (target <= 1.3)"
for scheme in http https; do
  [ -n "${PER_ROUND_AB[$scheme]:-}" ] || continue
  echo "  per round ($scheme), protected / public:  ${PER_ROUND_AB[$scheme]}"
  echo "  per round ($scheme), public / public (A/A): ${PER_ROUND_AA[$scheme]}"
done
echo "100 access rules / no rules (HTTP):        $(ratio rules-100 rules-none)   (target >= 0.95)"
echo "OAuth client credentials / Basic cached:   $(ratio tokens-oauth-cc tokens-basic-cached)   (p50 / p99 ms: ${P50[tokens-oauth-cc]:-n/a} / ${P99[tokens-oauth-cc]:-n/a})"
echo "cold-start burst argon2 verifications:     ${COLD_VERIFICATIONS:-n/a}   (target 1)"
if [ -n "${RPS[upstream-direct]:-}" ]; then
  echo "proxy: through gatehouse / direct:         $(ratio gatehouse-proxy-auth upstream-direct)"
  echo "sidecar / nginx proxy_pass:                $(ratio gatehouse-proxy-auth nginx-proxy-pass)   (target >= 1.0)"
  echo "sidecar / Caddy reverse_proxy:             $(ratio gatehouse-proxy-auth caddy-reverse-proxy)"
  echo "proxy: added p50 / p99 (ms):               $(awk -v a="${P50[gatehouse-proxy-auth]}" -v b="${P50[upstream-direct]}" 'BEGIN { printf "%.3f", a - b }') / $(awk -v a="${P99[gatehouse-proxy-auth]}" -v b="${P99[upstream-direct]}" 'BEGIN { printf "%.3f", a - b }')"
fi
