"""transformers' numbers for our caption workload, on the checkpoint folder
our engine is measured on (same weights): greedy captions with exactly
NEW new tokens (min_new_tokens = max_new_tokens), no prompt. OPT or Flan-T5
checkpoints (the input ids: the <image> placeholders, then BOS for OPT or
</s> for T5, as Blip2Processor lays out an empty prompt).

    python3 hf_caption_bench.py MODEL_DIR OUT.json [--device cuda|cpu] [--dtype float16|float32]
        [--batches 1,8,64] [--new-tokens 32] [--iters 3]

Per batch: captions/s and generated tokens/s; at batch 1 also ms per token
((t(NEW) - t(1)) / (NEW - 1)) and time to first token (t(1)); and the image
path alone (vision encoder, Q-Former, projection) in images/s at the largest
batch. Medians of --iters runs after one warm-up.
"""
import argparse
import json

import torch
from timing import median_seconds
from transformers import Blip2ForConditionalGeneration


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("out")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="float16")  # float16, bfloat16 or float32
    parser.add_argument("--batches", default="1,8,64")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--iters", type=int, default=3)
    args = parser.parse_args()
    dev = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    model = Blip2ForConditionalGeneration.from_pretrained(args.model, dtype=dtype).to(dev).eval()
    cfg = model.config
    size = cfg.vision_config.image_size
    image_token = cfg.image_token_index
    t5 = cfg.text_config.model_type == "t5"
    tail = cfg.text_config.eos_token_id if t5 else cfg.text_config.bos_token_id
    queries = cfg.num_query_tokens

    def timed(fn):
        return median_seconds(fn, dev, args.iters)

    rows = []
    new = args.new_tokens
    batches = [int(b) for b in args.batches.split(",")]
    with torch.inference_mode():
        for batch in batches:
            ids = torch.tensor([[image_token] * queries + [tail]] * batch, device=dev)
            pixels = torch.randn(batch, 3, size, size, device=dev, dtype=dtype)

            def generate(n):
                return lambda: model.generate(pixel_values=pixels, input_ids=ids, attention_mask=torch.ones_like(ids),
                                              max_new_tokens=n, min_new_tokens=n, do_sample=False)

            t_all = timed(generate(new))
            row = {"batch": batch, "new_tokens": new, "seconds": t_all, "captions_per_s": batch / t_all,
                   "tokens_per_s": batch * new / t_all}
            if batch == 1:
                t_one = timed(generate(1))
                row["time_to_first_token_ms"] = t_one * 1e3
                row["ms_per_token"] = (t_all - t_one) / (new - 1) * 1e3
            rows.append(row)
            print(json.dumps(row), flush=True)
        batch = max(batches)
        pixels = torch.randn(batch, 3, size, size, device=dev, dtype=dtype)
        t_image = timed(lambda: model.get_image_features(pixel_values=pixels))
    report = {"benchmark": "transformers_caption", "model": args.model, "model_type": cfg.text_config.model_type,
              "device": str(dev), "dtype": args.dtype,
              "torch": torch.__version__, "results": rows,
              "image_path": {"batch": batch, "images_per_s": batch / t_image, "ms": t_image * 1e3}}
    if dev.type == "cuda":
        report["gpu"] = torch.cuda.get_device_name(dev)
        report["peak_memory_gb"] = torch.cuda.max_memory_allocated(dev) / 2**30
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)
    print("image path:", json.dumps(report["image_path"]))


if __name__ == "__main__":
    main()
