#!/usr/bin/env bash
# The Python client (Debian python3-grpcio, stubs from our proto) captions an
# image and gets exactly what the C++ client and `blip2 generate` print.
# Usage (inside with_server.sh): python_client_check.sh BLIP2 STUBS MODEL IMAGE
set -euo pipefail
blip2=$1 stubs=$2 model=$3 image=$4
py=$(/usr/bin/python3 "$(dirname "$0")/../../clients/python/blip2_client.py" --stubs "$stubs" --target "$BLIP2_TARGET" caption "$image")
cpp=$("$blip2" client caption --target "$BLIP2_TARGET" --image "$image")
# The same thread count as the server (intra_op_threads: 1): the same sums in
# the same order, so the same greedy text; another count may flip a near tie.
local_text=$(OMP_NUM_THREADS=1 "$blip2" generate --model "$model" --image "$image" 2>/dev/null)
echo "python: $(printf %q "$py")"
[ -n "$py" ] && [ "$py" == "$cpp" ] && [ "$py" == "$local_text" ]
batch=$(/usr/bin/python3 "$(dirname "$0")/../../clients/python/blip2_client.py" --stubs "$stubs" --max-new-tokens 4 batch "$image" "$image")
[ "$(printf '%s\n' "$batch" | wc -l)" -eq 2 ]
# Decoding options reach the server the same way from both clients.
opts=(--num-beams 3 --num-return-sequences 2 --max-new-tokens 6 --repetition-penalty 1.3)
py_beams=$(/usr/bin/python3 "$(dirname "$0")/../../clients/python/blip2_client.py" --stubs "$stubs" --target "$BLIP2_TARGET" "${opts[@]}" caption "$image")
cpp_beams=$("$blip2" client caption --target "$BLIP2_TARGET" --image "$image" "${opts[@]}")
[ "$(printf '%s\n' "$py_beams" | wc -l)" -eq 2 ] && [ "$py_beams" == "$cpp_beams" ]
# A bad option is refused with the field named.
! err=$(/usr/bin/python3 "$(dirname "$0")/../../clients/python/blip2_client.py" --stubs "$stubs" --target "$BLIP2_TARGET" --top-p 1.5 caption "$image" 2>&1)
grep -q "INVALID_ARGUMENT: options.top_p" <<<"$err"
