#!/usr/bin/env bash
# A `blip2 serve` process on the tiny retrieval model ranks the fixture texts
# for a fixture image: the Python client's `rank` and the C++ client's `match`
# print the same lines, and the offline `blip2 match` the same ranking with
# the same numbers up to rounding (same_numbers.py: it computes in another
# process, with its own thread count); `embed` agrees between the client and
# the offline command the same way; GetModelInfo says what is served; and
# generation is refused with FAILED_PRECONDITION.
# Usage (inside with_server.sh): retrieval_check.sh BLIP2 STUBS MODEL IMAGE
set -euo pipefail
blip2=$1 stubs=$2 model=$3 image=$4
texts=("a photo of a cat" "a cup of coffee on a saucer" "an astronaut in a space suit")
flags=()
for t in "${texts[@]}"; do flags+=(--text "$t"); done
py=$(/usr/bin/python3 "$(dirname "$0")/../../clients/python/blip2_client.py" --stubs "$stubs" --target "$BLIP2_TARGET" \
  rank "$image" "${texts[@]}")
cpp=$("$blip2" client match --target "$BLIP2_TARGET" --image "$image" "${flags[@]}")
offline=$("$blip2" match --model "$model" --image "$image" "${flags[@]}" --max-text-tokens 32 2>/dev/null)
printf 'ranked:\n%s\n' "$py"
same_numbers=(/usr/bin/python3 "$(dirname "$0")/same_numbers.py")
# Both clients print what the one server computed: the same text.
[ "$(printf '%s\n' "$py" | wc -l)" -eq 3 ] && [ "$py" == "$cpp" ]
"${same_numbers[@]}" --ranked "$py" "$offline"
embed=$("$blip2" client embed --target "$BLIP2_TARGET" --image "$image" --text "${texts[0]}")
offline_embed=$("$blip2" embed --model "$model" --image "$image" --text "${texts[0]}" 2>/dev/null)
"${same_numbers[@]}" "$embed" "$offline_embed"
info=$("$blip2" client info --target "$BLIP2_TARGET")
grep -q 'model_type: "blip2-itm"' <<<"$info"
grep -q 'serves: "retrieval"' <<<"$info"
grep -q 'max_text_tokens: 32' <<<"$info"
! err=$("$blip2" client caption --target "$BLIP2_TARGET" --image "$image" 2>&1)
grep -q "FAILED_PRECONDITION" <<<"$err"
echo "retrieval check passed"
