"""Writes a random-weight BLIP-2 checkpoint with transformers' own
save_pretrained, so transformers and our engine load the very same weights.

    python3 make_checkpoint.py OUT_DIR [--shape opt-2.7b|tiny] [--dtype float16|float32]

opt-2.7b: the released Salesforce/blip2-opt-2.7b configuration (ViT-g 39
layers, Q-Former 12 layers, OPT-2.7b 32 layers). tiny: the bundled fixture's
configuration (for a CPU smoke run of benchmarks/gpu/run.sh). The tokenizer,
processor and generation files come from the bundled tiny fixture: captions
need only the BOS token, and ids outside its vocabulary decode to nothing.
"""
import argparse
import json
import os
import shutil
import time

import torch
from transformers import Blip2Config, Blip2ForConditionalGeneration

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURE = os.path.join(HERE, "..", "..", "tests", "fixtures", "blip2-tiny-opt")

OPT_27B_TEXT = dict(model_type="opt", vocab_size=50272, hidden_size=2560, num_hidden_layers=32, ffn_dim=10240,
                    num_attention_heads=32, max_position_embeddings=2048, word_embed_proj_dim=2560,
                    do_layer_norm_before=True, activation_function="relu", bos_token_id=2, eos_token_id=50118,
                    pad_token_id=1)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--shape", choices=["opt-2.7b", "tiny"], default="opt-2.7b")
    parser.add_argument("--dtype", choices=["float16", "float32"], default="float16")
    args = parser.parse_args()
    start = time.time()
    if args.shape == "tiny":
        cfg = Blip2Config.from_pretrained(FIXTURE)
    else:
        # vision_config and qformer_config defaults are blip2-opt-2.7b's.
        cfg = Blip2Config(text_config=OPT_27B_TEXT, num_query_tokens=32, image_token_index=50265)
    torch.manual_seed(0)
    dtype = getattr(torch, args.dtype)
    model = Blip2ForConditionalGeneration._from_config(cfg, dtype=dtype).eval()
    with torch.no_grad():  # small weights keep float16 activations finite over 32 layers
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.02)
    os.makedirs(args.out, exist_ok=True)
    model.save_pretrained(args.out)
    for name in ("tokenizer.json", "tokenizer_config.json", "processor_config.json"):
        shutil.copy(os.path.join(FIXTURE, name), os.path.join(args.out, name))
    generation = {"bos_token_id": cfg.text_config.bos_token_id, "eos_token_id": cfg.text_config.eos_token_id,
                  "pad_token_id": cfg.text_config.pad_token_id}
    with open(os.path.join(args.out, "generation_config.json"), "w") as f:
        json.dump(generation, f, indent=1)
    with open(os.path.join(args.out, "processor_config.json")) as f:
        processor = json.load(f)
    processor["num_query_tokens"] = cfg.num_query_tokens
    with open(os.path.join(args.out, "processor_config.json"), "w") as f:
        json.dump(processor, f, indent=1)
    params = sum(p.numel() for p in model.parameters())
    print(f"wrote {args.shape} ({params / 1e9:.2f} B parameters, {args.dtype}) to {args.out} in "
          f"{time.time() - start:.1f} s")


if __name__ == "__main__":
    main()
