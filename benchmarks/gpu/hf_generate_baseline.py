"""transformers' own numbers for the same workload as generation_bench, on the
GPU machine (it has transformers; nothing is downloaded): a randomly
initialised Blip2ForConditionalGeneration of blip2-opt-2.7b's shape in float16,
greedy, 32 new tokens (min_new_tokens=32), ms per token at batch 1 and
generated tokens/s at batch 64. Writes JSON to the path given as argv[1]."""
import json
import sys
import time

import torch
import transformers
from transformers import Blip2Config, Blip2ForConditionalGeneration

NEW = 32
text = dict(model_type="opt", vocab_size=50304, hidden_size=2560, num_hidden_layers=32, ffn_dim=10240,
            num_attention_heads=32, max_position_embeddings=2048, word_embed_proj_dim=2560,
            do_layer_norm_before=True, activation_function="relu", bos_token_id=2, eos_token_id=50118, pad_token_id=1)
cfg = Blip2Config(text_config=text, num_query_tokens=32, image_token_index=50265)
with torch.device("cuda"):
    model = Blip2ForConditionalGeneration._from_config(cfg, dtype=torch.float16).eval()
results = []
for batch in (1, 64):
    ids = torch.tensor([[50265] * 32 + [2]] * batch, device="cuda")
    pv = torch.randn(batch, 3, 224, 224, device="cuda", dtype=torch.float16)

    def run(new):
        return model.generate(pixel_values=pv, input_ids=ids, attention_mask=torch.ones_like(ids),
                              max_new_tokens=new, min_new_tokens=new, do_sample=False)

    run(2)
    torch.cuda.synchronize()
    times = {}
    for new in (1, NEW):
        samples = []
        for _ in range(3):
            torch.cuda.synchronize()
            start = time.time()
            run(new)
            torch.cuda.synchronize()
            samples.append(time.time() - start)
        times[new] = sorted(samples)[1]
    per_token = (times[NEW] - times[1]) / (NEW - 1)
    row = dict(batch=batch, new_tokens=NEW, time_to_first_token_ms=times[1] * 1e3, ms_per_token=per_token * 1e3,
               tokens_per_s=batch * (NEW - 1) / (times[NEW] - times[1]), total_s=times[NEW],
               captions_per_s=batch / times[NEW])
    print("transformers", row, flush=True)
    results.append(row)
json.dump({"transformers": transformers.__version__, "torch": torch.__version__, "gpu": torch.cuda.get_device_name(),
           "dtype": "float16", "model": "blip2-opt-2.7b shape, random weights", "results": results},
          open(sys.argv[1], "w"), indent=1)
