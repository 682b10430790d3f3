#!/usr/bin/env bash
# gRPC load balancing with real replicas on loopback: three `blip2 serve`
# processes (the tiny model) behind nginx (grpc_pass, round robin), driven by
# our load generator (build/benchmarks/grpc_load). Shows:
#  (a) calls spread across the replicas (each replica's own metrics);
#  (b) killing one replica (SIGKILL) mid-run fails at most its calls in
#      flight, and new calls all succeed on the others;
#  (c) taking a replica out of nginx, then SIGTERM under load, loses nothing:
#      every call succeeds and the replica exits 0 after its drain;
#  (d) client-side round robin over several addresses from our C++ client
#      (grpc_load --lb round_robin) spreads calls without a proxy.
# Starts and stops its own nginx and servers; bounded by ctest's timeout.
# Usage: lb_check.sh BLIP2 GRPC_LOAD CONFIG
set -euo pipefail
blip2=$1 load=$2 config=$3
dir=$(mktemp -d)
declare -A pid port mport
nginx_started=0
cleanup() {
  for p in "${pid[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  if [[ $nginx_started == 1 ]]; then nginx -p "$dir" -c "$dir/nginx.conf" -s stop 2>/dev/null || true; fi
  rm -rf "$dir"
}
trap cleanup EXIT

start_replica() {  # name
  "$blip2" serve --config "$config" --port 0 --metrics_port 0 --port_file "$dir/ports.$1" --log_level warn \
    --drain_grace_seconds 20 &
  pid[$1]=$!
  for _ in $(seq 600); do
    [[ -s $dir/ports.$1 ]] && break
    kill -0 "${pid[$1]}" 2>/dev/null || { echo "replica $1 exited before listening" >&2; exit 1; }
    sleep 0.1
  done
  read -r port[$1] mport[$1] _ < "$dir/ports.$1"
}

# Generate calls that ended OK on one replica, from its /metrics.
served() {
  /usr/bin/python3 - "${mport[$1]}" <<'PY'
import re, sys, urllib.request
text = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=5).read().decode()
m = re.search(r'^blip2_requests_total\{rpc="Generate",code="OK"\} (\S+)$', text, re.M)
print(int(float(m.group(1))) if m else 0)
PY
}

free_port() { /usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

write_nginx() {  # replica names in the upstream
  local servers="" user=""
  for r in "$@"; do servers+="    server 127.0.0.1:${port[$r]} max_fails=1 fail_timeout=60s;"$'\n'; done
  [[ $(id -u) == 0 ]] && user="user root;"
  cat > "$dir/nginx.conf" <<EOF
$user
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/nginx.err warn;
events { worker_connections 512; }
http {
  access_log off;
  client_body_temp_path $dir/body;
  proxy_temp_path $dir/proxy;
  fastcgi_temp_path $dir/fastcgi;
  uwsgi_temp_path $dir/uwsgi;
  scgi_temp_path $dir/scgi;
  client_max_body_size 64m;
  upstream blip2 {
$servers  }
  server {
    listen 127.0.0.1:$nginx_port http2;
    location / {
      grpc_pass grpc://blip2;
      grpc_next_upstream error timeout;
      grpc_read_timeout 60s;
    }
  }
}
EOF
}

# Runs the load generator; prints "<ok> <errors>" from its JSON. A load
# generator that fails (rather than reporting failed calls) fails the check,
# with its output.
run_load() {  # out-name extra-args...
  local name=$1 rc=0
  shift
  "$load" --new-tokens 16 --image-size 96 --out "$dir/$name.json" "$@" > "$dir/$name.log" 2>&1 || rc=$?
  if (( rc != 0 )); then
    echo "grpc_load ($name) exited with $rc:" >&2
    cat "$dir/$name.log" >&2
    return 1
  fi
  /usr/bin/python3 -c "import json,sys; r=json.load(open(sys.argv[1]))['results'][0]; print(r['ok'], sum(r['errors'].values()))" "$dir/$name.json"
}

for r in r1 r2 r3; do start_replica $r; done
nginx_port=$(free_port)
write_nginx r1 r2 r3
nginx -p "$dir" -c "$dir/nginx.conf" -g "daemon on;" && nginx_started=1
target=127.0.0.1:$nginx_port

# (a) Spread: 90 calls, 6 at a time, through nginx.
read -r ok errors < <(run_load a --target "$target" --concurrency 6 --requests 90)
a=($(served r1) $(served r2) $(served r3))
echo "(a) spread: $ok ok, $errors errors; Generate OK per replica: ${a[*]}"
[[ $ok == 90 && $errors == 0 ]]
for n in "${a[@]}"; do (( n >= 15 )); done

# (b) SIGKILL one replica mid-run.
run_load b --target "$target" --concurrency 6 --requests 150 > "$dir/b.result" &
load_pid=$!
for _ in $(seq 300); do (( $(served r3) >= ${a[2]} + 10 )) && break; sleep 0.05; done
kill -9 "${pid[r3]}"
wait "$load_pid"
read -r ok errors < "$dir/b.result"
codes=$(/usr/bin/python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['results'][0]['errors'])" "$dir/b.json")
echo "(b) SIGKILL r3 mid-run: $ok ok, $errors errors $codes (at most the 6 calls in flight at the kill may fail)"
(( ok + errors == 150 && errors <= 6 ))
read -r ok errors < <(run_load b2 --target "$target" --concurrency 6 --requests 60)
echo "(b) afterwards: $ok ok, $errors errors"
[[ $ok == 60 && $errors == 0 ]]

# (c) Out of nginx first (as a preStop would), then SIGTERM under load.
run_load c --target "$target" --concurrency 6 --requests 150 > "$dir/c.result" &
load_pid=$!
before=$(served r2)
for _ in $(seq 300); do (( $(served r2) >= before + 10 )) && break; sleep 0.05; done
write_nginx r1
nginx -p "$dir" -c "$dir/nginx.conf" -s reload
sleep 0.5
kill -TERM "${pid[r2]}"
drain_rc=0
wait "${pid[r2]}" || drain_rc=$?
wait "$load_pid"
read -r ok errors < "$dir/c.result"
echo "(c) r2 out of nginx, then SIGTERM under load: $ok ok, $errors errors; r2 exit code $drain_rc"
[[ $ok == 150 && $errors == 0 && $drain_rc == 0 ]]

# (d) Client-side round robin over three addresses, no proxy.
for r in r4 r5; do start_replica $r; done
b1=$(served r1)
read -r ok errors < <(run_load d --target "ipv4:127.0.0.1:${port[r1]},127.0.0.1:${port[r4]},127.0.0.1:${port[r5]}" \
  --lb round_robin --concurrency 6 --requests 90)
d=($(( $(served r1) - b1 )) $(served r4) $(served r5))
echo "(d) client-side round robin: $ok ok, $errors errors; Generate OK per replica: ${d[*]}"
[[ $ok == 90 && $errors == 0 ]]
for n in "${d[@]}"; do (( n >= 15 )); done
echo "load balancing check passed"
