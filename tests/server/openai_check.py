#!/usr/bin/env python3
"""The official `openai` Python package against a real `blip2 serve` (run inside
with_server.sh, with a generation and a retrieval model): models, chat
non-streaming and streaming, n with a seed, stop, a question, usage, logprobs,
embeddings, and each refusal the SDK maps to its own error class. The caption,
token log-probabilities and embeddings equal what the gRPC API returns for the
same image and options, and the gRPC ids equal transformers' fixture run.

Usage: openai_check.py BLIP2 IMAGE FIXTURES_DIR
       (BLIP2_HTTP_URL and BLIP2_TARGET from with_server.sh)
"""
import base64
import json
import math
import os
import subprocess
import sys

import openai

blip2, image_path, fixtures = sys.argv[1], sys.argv[2], sys.argv[3]
# The server requires an API key (BLIP2_API_KEY, from the test's keys file).
client = openai.OpenAI(base_url=os.environ["BLIP2_HTTP_URL"], api_key=os.environ["BLIP2_API_KEY"], max_retries=0)
with open(image_path, "rb") as f:
    data_url = "data:image/jpeg;base64," + base64.b64encode(f.read()).decode()


def user(text=None, images=1):
    parts = [{"type": "image_url", "image_url": {"url": data_url}} for _ in range(images)]
    if text is not None:
        parts.append({"type": "text", "text": text})
    return [{"role": "user", "content": parts}]


def expect(error_class, what, **kwargs):
    try:
        client.chat.completions.create(**kwargs)
    except error_class as e:
        assert what in str(e), f"{error_class.__name__} without {what!r}: {e}"
        return
    raise AssertionError(f"expected {error_class.__name__} for {kwargs.keys()}")


models = [m.id for m in client.models.list()]
assert models == ["blip2-tiny-opt", "blip2-tiny-itm"], models
model, retrieval_model = models


def grpc_client(*args):
    return subprocess.run([blip2, "client", *args, "--target", os.environ["BLIP2_TARGET"]], check=True,
                          capture_output=True, text=True).stdout

# Caption, as over gRPC.
done = client.chat.completions.create(model=model, messages=user(), max_tokens=8)
caption = done.choices[0].message.content
assert done.choices[0].finish_reason == "length", done.choices[0].finish_reason
assert done.usage.completion_tokens == 8, done.usage
grpc_caption = subprocess.run([blip2, "client", "caption", "--target", os.environ["BLIP2_TARGET"], "--image",
                               image_path, "--max-new-tokens", "8"], check=True, capture_output=True,
                              text=True).stdout.rstrip("\n")
assert caption == grpc_caption, (caption, grpc_caption)

# Streaming: the deltas add up to the same text; usage comes last when asked.
chunks = list(client.chat.completions.create(model=model, messages=user(), max_tokens=8, stream=True,
                                             stream_options={"include_usage": True}))
streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
assert streamed == caption, (streamed, caption)
finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
assert finish == ["length"], finish
assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 8, chunks[-1]

# A question is asked in the released prompt, and answers differ from the caption.
answer = client.chat.completions.create(model=model, messages=user("what is in the picture?"), max_tokens=8)
assert answer.choices[0].message.content != caption

# n samples with a seed: reproducible.
first = client.chat.completions.create(model=model, messages=user(), max_tokens=6, n=2, temperature=1.0, seed=7)
again = client.chat.completions.create(model=model, messages=user(), max_tokens=6, n=2, temperature=1.0, seed=7)
assert len(first.choices) == 2 and [c.index for c in first.choices] == [0, 1]
assert [c.message.content for c in first.choices] == [c.message.content for c in again.choices]

# A stop string taken from the caption ends the text before it.
stop = caption[2:4]
stopped = client.chat.completions.create(model=model, messages=user(), max_tokens=8, stop=[stop])
assert stopped.choices[0].finish_reason == "stop", stopped.choices[0]
assert stop not in stopped.choices[0].message.content and caption.startswith(stopped.choices[0].message.content)

# logprobs: 12 greedy tokens (min_tokens keeps the end token away), as the
# gRPC API gives them, whose ids are transformers' (the fixture's run).
with_logprobs = client.chat.completions.create(model=model, messages=user(), max_tokens=12, logprobs=True,
                                               top_logprobs=3, extra_body={"min_tokens": 12})
content = with_logprobs.choices[0].logprobs.content
grpc_lines = grpc_client("generate", "--image", image_path, "--max-new-tokens", "12", "--min-new-tokens", "12",
                         "--ids", "--logprobs", "3").splitlines()
grpc_ids = [int(x) for x in grpc_lines[0].split()]
grpc_logprobs = [float(x) for x in grpc_lines[1].split()[1:]]
with open(os.path.join(fixtures, "blip2-tiny-opt", "reference.json")) as f:
    case = json.load(f)["cases"]["chelsea.p0"]
fixture_ids = case["generate_greedy_min12_raw"][len(case["input_ids"]):]
assert grpc_ids == fixture_ids, (grpc_ids, fixture_ids)
assert len(content) == 12 == len(grpc_logprobs), (len(content), grpc_logprobs)
for token, want in zip(content, grpc_logprobs):
    assert abs(token.logprob - want) <= 1e-5 * (1 + abs(want)), (token.logprob, want)
    assert len(token.top_logprobs) == 3 and token.logprob <= token.top_logprobs[0].logprob + 1e-6
    assert [t.logprob for t in token.top_logprobs] == sorted((t.logprob for t in token.top_logprobs), reverse=True)
    assert bytes(token.bytes).decode("utf-8", "replace") == token.token
# The tokens' bytes make the text (this tiny vocabulary has no special tokens among them).
assert b"".join(bytes(t.bytes) for t in content).decode("utf-8", "replace") == \
    with_logprobs.choices[0].message.content
# Streamed, the same log-probabilities arrive spread over the chunks.
stream_chunks = list(client.chat.completions.create(model=model, messages=user(), max_tokens=12, logprobs=True,
                                                    top_logprobs=3, stream=True, extra_body={"min_tokens": 12}))
streamed_logprobs = [t.logprob for c in stream_chunks if c.choices and c.choices[0].logprobs
                     for t in c.choices[0].logprobs.content]
assert streamed_logprobs == [t.logprob for t in content], (streamed_logprobs, content)

# Embeddings from the retrieval model: texts, then images (our "images"
# extension), normalised, equal to the gRPC Embed's; base64 (the SDK's
# default) and float agree.
texts = ["a photo of a cat", "a cup of coffee"]
embedded = client.embeddings.create(model=retrieval_model, input=texts, extra_body={"images": [data_url]})
as_floats = client.embeddings.create(model=retrieval_model, input=texts, extra_body={"images": [data_url]},
                                     encoding_format="float")
assert [d.index for d in embedded.data] == [0, 1, 2]
assert [d.embedding for d in embedded.data] == [d.embedding for d in as_floats.data]
text_vector, image_rows = embedded.data[0].embedding, embedded.data[2].embedding
assert abs(math.sqrt(sum(v * v for v in text_vector)) - 1) < 1e-4
rows, cols = embedded.data[2].model_extra["shape"]
assert rows * cols == len(image_rows) and cols == len(text_vector)
assert embedded.usage.prompt_tokens > 0
grpc_embed = grpc_client("embed", "--image", image_path, "--text", texts[0]).splitlines()
image_head = [float(x) for x in grpc_embed[0].split("\t")[2].split()]
text_head = [float(x) for x in grpc_embed[1].split("\t")[2].split()]
assert all(abs(a - b) < 2e-6 for a, b in zip(image_rows, image_head)), (image_rows[:4], image_head)
assert all(abs(a - b) < 2e-6 for a, b in zip(text_vector, text_head)), (text_vector[:4], text_head)

# Refusals, in OpenAI's error shape and status.
expect(openai.NotFoundError, "is not served here", model="gpt-4o", messages=user())
expect(openai.BadRequestError, "more than one image", model=model, messages=user(images=2))
expect(openai.BadRequestError, "no image part", model=model, messages=[{"role": "user", "content": [
    {"type": "text", "text": "hello"}]}])
expect(openai.BadRequestError, "top_logprobs needs logprobs", model=model, messages=user(), top_logprobs=2)
expect(openai.BadRequestError, "beam search", model=model, messages=user(), logprobs=True,
       extra_body={"num_beams": 2})
expect(openai.NotFoundError, "does not serve /v1/chat/completions", model=retrieval_model, messages=user())
try:
    client.embeddings.create(model=model, input=["x"])
    raise AssertionError("embeddings from the generation model")
except openai.NotFoundError as e:
    assert "does not serve /v1/embeddings" in str(e), e
expect(openai.BadRequestError, "bogus is not a known field", model=model, messages=user(), extra_body={"bogus": 1})
expect(openai.BadRequestError, "fetches no http URLs", model=model, messages=[{"role": "user", "content": [
    {"type": "image_url", "image_url": {"url": "http://example.com/cat.jpg"}}]}])
expect(openai.BadRequestError, "top_p", model=model, messages=user(), top_p=1.5)
# 401 for a wrong key; 413 for a body over limits.max_message_bytes (4 MB in this test).
intruder = openai.OpenAI(base_url=os.environ["BLIP2_HTTP_URL"], api_key="wrong-key", max_retries=0)
try:
    intruder.models.list()
    raise AssertionError("a wrong API key was accepted")
except openai.AuthenticationError as e:
    assert "wrong-key" not in str(e), e  # the key is never echoed
huge = "data:image/jpeg;base64," + base64.b64encode(b"\0" * (4 << 20)).decode()
try:
    client.chat.completions.create(model=model, messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": huge}}]}])
    raise AssertionError("a body over max_message_bytes was accepted")
except openai.APIStatusError as e:
    assert e.status_code == 413 and "max_message_bytes" in str(e), e
# A stream whose image does not decode still gets a 400 (the 200 waits for the first event).
not_an_image = [{"role": "user", "content": [{"type": "image_url", "image_url": {
    "url": "data:image/jpeg;base64," + base64.b64encode(b"not an image at all").decode()}}]}]
expect(openai.BadRequestError, "image", model=model, messages=not_an_image, stream=True)
print(f"openai {openai.__version__}: models, chat, streaming, n, seed, stop, logprobs, embeddings and refusals "
      f"as expected; "
      f"caption {caption!r}")
