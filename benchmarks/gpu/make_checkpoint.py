"""Writes a random-weight BLIP-2 checkpoint with transformers' own
save_pretrained, so transformers and our engine load the very same weights.

    python3 make_checkpoint.py OUT_DIR [--shape opt-2.7b|opt-6.7b|flan-t5-xl|flan-t5-xxl|itm-vit-g|tiny|tiny-t5|tiny-itm]
        [--dtype float16|bfloat16|float32] [--streamed]

opt-2.7b: the released Salesforce/blip2-opt-2.7b configuration (ViT-g 39
layers, Q-Former 12 layers, OPT-2.7b 32 layers). flan-t5-xl: the released
Salesforce/blip2-flan-t5-xl one (the same image path, Flan-T5-XL: 24 + 24
layers of d_model 2048, gated GELU). itm-vit-g: Salesforce/blip2-itm-vit-g's
retrieval model (the same ViT-g and Q-Former with text input, 256-wide ITC
projections, the ITM head). tiny, tiny-t5, tiny-itm: the bundled fixtures'
configurations (for a CPU smoke run of benchmarks/gpu/run.sh). The tokenizer,
processor and generation files come from the bundled tiny fixture of the
same family: captions need only BOS (OPT) or </s> (T5), and ids outside its
vocabulary decode to nothing. Weights are drawn on the GPU when there is one
(seconds instead of minutes for billions of parameters).

opt-6.7b and flan-t5-xxl (12 B parameters: 49 GB in float32, more than this
machine's memory) are written tensor by tensor (--streamed, implied for
them): the model is built on the meta device for its names and shapes, each
tensor is drawn alone (matrices N(0, 0.02), norm weights 1, other vectors 0,
as the full path leaves them) and shards of at most 4 GB are written with
safetensors and an index, as save_pretrained lays them out. Which names are
stored (tied embeddings only once) follows the bundled tiny fixture of the
family.
"""
import argparse
import json
import os
import re
import shutil
import time

import torch
from transformers import Blip2Config, Blip2ForConditionalGeneration, Blip2ForImageTextRetrieval

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "..", "tests", "fixtures")

OPT_27B_TEXT = dict(model_type="opt", vocab_size=50272, hidden_size=2560, num_hidden_layers=32, ffn_dim=10240,
                    num_attention_heads=32, max_position_embeddings=2048, word_embed_proj_dim=2560,
                    do_layer_norm_before=True, activation_function="relu", bos_token_id=2, eos_token_id=50118,
                    pad_token_id=1)
OPT_67B_TEXT = dict(OPT_27B_TEXT, hidden_size=4096, ffn_dim=16384, word_embed_proj_dim=4096)
FLAN_T5_XXL_TEXT = dict(model_type="t5", vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24,
                        num_decoder_layers=24, num_heads=64, feed_forward_proj="gated-gelu", dense_act_fn="gelu",
                        tie_word_embeddings=False, decoder_start_token_id=0, eos_token_id=1, pad_token_id=0)
FLAN_T5_XL_TEXT = dict(model_type="t5", vocab_size=32128, d_model=2048, d_kv=64, d_ff=5120, num_layers=24,
                       num_decoder_layers=24, num_heads=32, feed_forward_proj="gated-gelu", dense_act_fn="gelu",
                       tie_word_embeddings=False, decoder_start_token_id=0, eos_token_id=1, pad_token_id=0)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--shape", choices=["opt-2.7b", "opt-6.7b", "flan-t5-xl", "flan-t5-xxl", "itm-vit-g", "tiny",
                                            "tiny-t5", "tiny-itm"], default="opt-2.7b")
    parser.add_argument("--dtype", choices=["float16", "bfloat16", "float32"], default="float16")
    parser.add_argument("--streamed", action="store_true", help="write tensor by tensor (implied for the largest)")
    args = parser.parse_args()
    args.streamed = args.streamed or args.shape in ("opt-6.7b", "flan-t5-xxl")
    start = time.time()
    t5 = "t5" in args.shape
    itm = "itm" in args.shape
    fixture = os.path.join(FIXTURES, "blip2-tiny-flan-t5" if t5 else "blip2-tiny-itm" if itm else "blip2-tiny-opt")
    if args.shape.startswith("tiny"):
        cfg = Blip2Config.from_pretrained(fixture)
    elif itm:
        cfg = Blip2Config(qformer_config=dict(use_qformer_text_input=True, vocab_size=30523), num_query_tokens=32,
                          image_text_hidden_size=256)
    elif t5:
        # 32100 is <image> in the released Flan-T5 BLIP-2 tokenizer.
        text = FLAN_T5_XXL_TEXT if args.shape == "flan-t5-xxl" else FLAN_T5_XL_TEXT
        cfg = Blip2Config(text_config=text, num_query_tokens=32, image_token_index=32100)
    else:
        # vision_config and qformer_config defaults are blip2-opt-2.7b's.
        text = OPT_67B_TEXT if args.shape == "opt-6.7b" else OPT_27B_TEXT
        cfg = Blip2Config(text_config=text, num_query_tokens=32, image_token_index=50265)
    torch.manual_seed(0)
    dtype = getattr(torch, args.dtype)
    if args.streamed:
        params = write_streamed(cfg, itm, fixture, args.out, dtype)
        copy_side_files(args, cfg, fixture, itm, t5)
        print(f"wrote {args.shape} ({params / 1e9:.2f} B parameters, {args.dtype}, streamed) to {args.out} in "
              f"{time.time() - start:.1f} s")
        return
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):
        model_class = Blip2ForImageTextRetrieval if itm else Blip2ForConditionalGeneration
        model = model_class._from_config(cfg, dtype=dtype).eval()
    with torch.no_grad():  # small weights keep float16 activations finite over 32 layers
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.02)
    os.makedirs(args.out, exist_ok=True)
    model.save_pretrained(args.out)
    copy_side_files(args, cfg, fixture, itm, t5)
    params = sum(p.numel() for p in model.parameters())
    print(f"wrote {args.shape} ({params / 1e9:.2f} B parameters, {args.dtype}) to {args.out} in "
          f"{time.time() - start:.1f} s")


def copy_side_files(args, cfg, fixture, itm, t5):
    """Tokenizer, processor and generation files beside the weights."""
    names = ["tokenizer.json", "tokenizer_config.json"]
    names += ["preprocessor_config.json"] if itm else ["processor_config.json"] + (["spiece.model"] if t5 else [])
    for name in names:
        shutil.copy(os.path.join(fixture, name), os.path.join(args.out, name))
    if itm:  # no generation files
        return
    text = cfg.text_config
    generation = {"eos_token_id": text.eos_token_id, "pad_token_id": text.pad_token_id}
    generation.update({"decoder_start_token_id": text.decoder_start_token_id} if t5 else {"bos_token_id": text.bos_token_id})
    with open(os.path.join(args.out, "generation_config.json"), "w") as f:
        json.dump(generation, f, indent=1)
    with open(os.path.join(args.out, "processor_config.json")) as f:
        processor = json.load(f)
    processor["num_query_tokens"] = cfg.num_query_tokens
    with open(os.path.join(args.out, "processor_config.json"), "w") as f:
        json.dump(processor, f, indent=1)


def layer_pattern(name):
    return re.sub(r"\.\d+\.", ".N.", name)


def write_streamed(cfg, itm, fixture, out, dtype, shard_bytes=4 << 30):
    """Writes the checkpoint tensor by tensor; returns the parameter count."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    index = os.path.join(fixture, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            stored = {layer_pattern(k) for k in json.load(f)["weight_map"]}
    else:
        with safe_open(os.path.join(fixture, "model.safetensors"), "pt") as f:
            stored = {layer_pattern(k) for k in f.keys()}
    with torch.device("meta"):
        model_class = Blip2ForImageTextRetrieval if itm else Blip2ForConditionalGeneration
        meta = model_class(cfg)
    tensors = [(k, v.shape) for k, v in meta.state_dict().items() if layer_pattern(k) in stored]
    # Shards of whole tensors, at most shard_bytes each (one tensor may exceed it).
    element = torch.finfo(dtype).bits // 8
    shards = [[]]
    size = 0
    for name, shape in tensors:
        nbytes = shape.numel() * element
        if shards[-1] and size + nbytes > shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append((name, shape))
        size += nbytes
    os.makedirs(out, exist_ok=True)
    weight_map = {}
    for i, shard in enumerate(shards):
        file = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        data = {}
        for name, shape in shard:
            if len(shape) > 1:
                data[name] = torch.empty(shape, dtype=torch.float32).normal_(0, 0.02).to(dtype)
            elif re.search(r"norm\d*\.weight$", name.lower()):
                data[name] = torch.ones(shape, dtype=dtype)
            else:
                data[name] = torch.zeros(shape, dtype=dtype)
            weight_map[name] = file
        save_file(data, os.path.join(out, file), metadata={"format": "pt"})
        del data
    total = sum(shape.numel() for _, shape in tensors)
    with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total * element}, "weight_map": weight_map}, f, indent=1)
    cfg.save_pretrained(out)
    return total


if __name__ == "__main__":
    main()
