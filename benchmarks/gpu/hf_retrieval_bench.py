"""transformers' numbers for our retrieval workload, on the checkpoint folder
our engine is measured on (same weights; benchmarks/retrieval_bench.cc):
images/s for image embeddings (Blip2ForImageTextRetrieval's ITC image side,
batch --images), texts/s for text embeddings (batches of 32), and pairs/s for
matching (ITC and ITM for every pair, --texts texts per image).

    python3 hf_retrieval_bench.py MODEL_DIR OUT.json [--device cuda|cpu] [--dtype float16|float32]
        [--images 64] [--texts 100] [--match-images 8] [--iters 3]

Texts are the same generated captions as retrieval_bench's; medians of --iters
runs after one warm-up.
"""
import argparse
import json

import torch
from timing import median_seconds
from transformers import AutoTokenizer, Blip2ForImageTextRetrieval

WORDS = ["a", "photo", "of", "cat", "dog", "on", "the", "table", "red", "car", "street", "two", "people", "walking",
         "near", "river", "with", "blue"]


def texts(n, offset):  # as retrieval_bench.cc's Texts()
    return [" ".join(WORDS[(i * 7 + offset * 13 + w * 5) % len(WORDS)] for w in range(8 + (i + offset) % 9))
            for i in range(n)]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("out")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="float16")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--texts", type=int, default=100)
    parser.add_argument("--match-images", type=int, default=8)
    parser.add_argument("--iters", type=int, default=3)
    args = parser.parse_args()
    dev, dtype = torch.device(args.device), getattr(torch, args.dtype)
    model = Blip2ForImageTextRetrieval.from_pretrained(args.model, dtype=dtype).to(dev).eval()
    tok = AutoTokenizer.from_pretrained(args.model)
    size = model.config.vision_config.image_size

    def timed(fn):
        return median_seconds(fn, dev, args.iters)

    def encode(batch):
        return tok(batch, padding=True, truncation=True, max_length=32, return_tensors="pt").to(dev)

    with torch.inference_mode():
        pixels = torch.randn(args.images, 3, size, size, device=dev, dtype=dtype)
        one_text = encode(["a photo"] * args.images)

        def embed_images():  # the ITC image side: vision, Q-Former, projection (one dummy text each)
            model(pixel_values=pixels, input_ids=one_text["input_ids"][:, :2], attention_mask=one_text["attention_mask"][:, :2])

        t_images = timed(embed_images)
        corpus = texts(args.texts * args.match_images, 0)
        batches = [encode(corpus[i:i + 32]) for i in range(0, len(corpus), 32)]

        def embed_texts():
            for b in batches:
                out = model.qformer(query_embeds=model.embeddings(input_ids=b["input_ids"]), query_length=0,
                                    attention_mask=b["attention_mask"])
                torch.nn.functional.normalize(model.text_projection(out.last_hidden_state[:, 0, :]), dim=-1)

        t_texts = timed(embed_texts)
        match_pixels = torch.randn(args.match_images, 3, size, size, device=dev, dtype=dtype)
        match_texts = [encode(texts(args.texts, i)) for i in range(args.match_images)]

        def match():  # per image: ITC over its texts, and ITM for each (image, text) pair
            for i in range(args.match_images):
                px, t = match_pixels[i:i + 1], match_texts[i]
                model(pixel_values=px, input_ids=t["input_ids"], attention_mask=t["attention_mask"])
                model(pixel_values=px.expand(args.texts, -1, -1, -1), input_ids=t["input_ids"],
                      attention_mask=t["attention_mask"], use_image_text_matching_head=True)

        t_match = timed(match)
    row = {"images_per_s": args.images / t_images, "texts_per_s": len(corpus) / t_texts,
           "match_pairs_per_s": args.match_images * args.texts / t_match}
    report = {"benchmark": "transformers_retrieval", "model": args.model, "device": str(dev), "dtype": args.dtype,
              "torch": torch.__version__, "results": [row]}
    if dev.type == "cuda":
        report["gpu"] = torch.cuda.get_device_name(dev)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)
    print(json.dumps(row))


if __name__ == "__main__":
    main()
