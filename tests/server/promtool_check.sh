#!/usr/bin/env bash
# Scrapes /metrics after some traffic and lints it with `promtool check metrics`
# (Debian package prometheus). Usage (inside with_server.sh): promtool_check.sh BLIP2 IMAGE
set -euo pipefail
blip2=$1 image=$2
"$blip2" client caption --target "$BLIP2_TARGET" --image "$image" >/dev/null
"$blip2" client generate --target "$BLIP2_TARGET" --image "$image" --max-new-tokens 5 >/dev/null 2>&1
"$blip2" client caption --target "$BLIP2_TARGET" --image /dev/null >/dev/null 2>&1 || true  # an error series too
metrics=$(/usr/bin/python3 -c "import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1]).read().decode())" "$BLIP2_METRICS_URL")
grep -q '^blip2_requests_total{rpc="Caption",code="OK"} 1$' <<<"$metrics"
grep -q '^blip2_requests_total{rpc="Caption",code="INVALID_ARGUMENT"} 1$' <<<"$metrics"
grep -q '^blip2_time_to_first_token_seconds_count 2$' <<<"$metrics"
grep -q '^blip2_kv_cache_blocks_used 0$' <<<"$metrics"
promtool check metrics <<<"$metrics"
echo "promtool check metrics: OK ($(grep -c '^# TYPE' <<<"$metrics") metric families)"
