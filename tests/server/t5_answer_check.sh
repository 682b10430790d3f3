#!/usr/bin/env bash
# A `blip2 serve` process on the tiny Flan-T5 model (its unigram tokenizer
# loaded next to gRPC's protobuf) answers a question: the Python client, the
# C++ client and `blip2 generate` give the same answer, greedy and with beams;
# GetModelInfo names the architecture; a prompt over the encoder's limit is
# refused naming it.
# Usage (inside with_server.sh): t5_answer_check.sh BLIP2 STUBS MODEL IMAGE
set -euo pipefail
blip2=$1 stubs=$2 model=$3 image=$4
client=(/usr/bin/python3 "$(dirname "$0")/../../clients/python/blip2_client.py" --stubs "$stubs" --target "$BLIP2_TARGET")
question="what animal is this?"
py=$("${client[@]}" --max-new-tokens 8 answer "$image" "$question")
cpp=$("$blip2" client answer --target "$BLIP2_TARGET" --image "$image" --question "$question" --max-new-tokens 8)
# The same thread count as the server (intra_op_threads: 1): the same sums in
# the same order, so the same greedy text; another count may flip a near tie.
local_text=$(OMP_NUM_THREADS=1 "$blip2" generate --model "$model" --image "$image" --question "$question" --max-new-tokens 8 2>/dev/null)
echo "answer: python $(printf %q "$py"), C++ $(printf %q "$cpp"), generate $(printf %q "$local_text")"
[ -n "$py" ] && [ "$py" == "$cpp" ] && [ "$py" == "$local_text" ]
opts=(--num-beams 3 --num-return-sequences 2 --max-new-tokens 6)
py_beams=$("${client[@]}" "${opts[@]}" answer "$image" "$question")
cpp_beams=$("$blip2" client answer --target "$BLIP2_TARGET" --image "$image" --question "$question" "${opts[@]}")
[ "$(printf '%s\n' "$py_beams" | wc -l)" -eq 2 ] && [ "$py_beams" == "$cpp_beams" ]
# GenerateBatch: one line per item ("index<TAB>text"), each the caption a single call gives.
caption=$("$blip2" client caption --target "$BLIP2_TARGET" --image "$image" --max-new-tokens 8)
batch=$("${client[@]}" --max-new-tokens 8 batch "$image" "$image" | sort)
[ "$batch" == "$(printf '0\t%s\n1\t%s' "$caption" "$caption")" ]
info=$("$blip2" client info --target "$BLIP2_TARGET")
grep -q 'model_type: "blip2-t5"' <<<"$info"
grep -q 'architecture: "Blip2ForConditionalGeneration"' <<<"$info"
long=$(printf 'word %.0s' $(seq 100))
! err=$("${client[@]}" generate "$image" --prompt "$long" 2>&1)
grep -q "INVALID_ARGUMENT: prompt has [0-9]* tokens; the limit is 64 (max_prompt_tokens)" <<<"$err"
echo "t5 answer check passed"
