#!/usr/bin/env python3
"""The official `openai` Python package against a real `blip2 serve` (run inside
with_server.sh): models, chat non-streaming and streaming, n with a seed, stop,
a question, usage, and each refusal the SDK maps to its own error class. The
caption equals what the gRPC API returns for the same image and options.

Usage: openai_check.py BLIP2 IMAGE   (BLIP2_HTTP_URL and BLIP2_TARGET from with_server.sh)
"""
import base64
import os
import subprocess
import sys

import openai

blip2, image_path = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=os.environ["BLIP2_HTTP_URL"], api_key="not-needed", max_retries=0)
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
assert models == ["blip2-tiny-opt"], models
model = models[0]

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

# Refusals, in OpenAI's error shape and status.
expect(openai.NotFoundError, "is not served here", model="gpt-4o", messages=user())
expect(openai.BadRequestError, "more than one image", model=model, messages=user(images=2))
expect(openai.BadRequestError, "no image part", model=model, messages=[{"role": "user", "content": [
    {"type": "text", "text": "hello"}]}])
expect(openai.BadRequestError, "logprobs is not supported", model=model, messages=user(), logprobs=True)
expect(openai.BadRequestError, "bogus is not a known field", model=model, messages=user(), extra_body={"bogus": 1})
expect(openai.BadRequestError, "only data: URLs", model=model, messages=[{"role": "user", "content": [
    {"type": "image_url", "image_url": {"url": "http://example.com/cat.jpg"}}]}])
expect(openai.BadRequestError, "top_p", model=model, messages=user(), top_p=1.5)
# A stream whose image does not decode still gets a 400 (the 200 waits for the first event).
not_an_image = [{"role": "user", "content": [{"type": "image_url", "image_url": {
    "url": "data:image/jpeg;base64," + base64.b64encode(b"not an image at all").decode()}}]}]
expect(openai.BadRequestError, "image", model=model, messages=not_an_image, stream=True)
print(f"openai {openai.__version__}: models, chat, streaming, n, seed, stop and refusals as expected; "
      f"caption {caption!r}")
