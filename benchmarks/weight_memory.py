"""Weight memory per released BLIP-2 shape, serving dtype and quantization,
from the parameter counts of transformers' own model classes (built on the
meta device: nothing is allocated). What the engine holds: the vision tower,
the language model's embeddings, head and norms in the serving dtype; the
Q-Former, query tokens and projection in float32 (as transformers runs
them); the language model's linear weights in the serving dtype, or one byte
each (plus a scale per row) with quantization "int8".

    python3 benchmarks/weight_memory.py
"""
import os
import sys

import torch
from transformers import Blip2Config, Blip2ForConditionalGeneration

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(HERE, "gpu"), HERE]
import make_checkpoint as shapes  # noqa: E402
from real_size import quantized  # noqa: E402  (the engine's int8 rule, once)

CONFIGS = {
    "blip2-opt-2.7b": (shapes.OPT_27B_TEXT, 50265),
    "blip2-opt-6.7b": (shapes.OPT_67B_TEXT, 50265),
    "blip2-flan-t5-xl": (shapes.FLAN_T5_XL_TEXT, 32100),
    "blip2-flan-t5-xxl": (shapes.FLAN_T5_XXL_TEXT, 32100),
}


def main():
    print("| checkpoint | parameters | float32 | bfloat16 / float16 | float32 + int8 | bfloat16 + int8 |")
    print("|---|---|---|---|---|---|")
    for name, (text, image_token) in CONFIGS.items():
        with torch.device("meta"):
            model = Blip2ForConditionalGeneration(Blip2Config(text_config=text, num_query_tokens=32,
                                                              image_token_index=image_token))
        params = dict(model.named_parameters())  # tied weights once
        float32_part = sum(p.numel() for n, p in params.items()
                           if n.startswith(("qformer.", "query_tokens", "language_projection")))
        linear = sum(p.numel() for n, p in params.items() if quantized(n, p.shape))
        rows = sum(p.shape[0] for n, p in params.items() if quantized(n, p.shape))
        rest = sum(p.numel() for p in params.values()) - float32_part - linear
        cells = []
        for size, int8 in ((4, False), (2, False), (4, True), (2, True)):
            total = float32_part * 4 + rest * size + (linear + rows * size if int8 else linear * size)
            cells.append(f"{total / 1e9:.1f} GB")
        print(f"| {name} | {sum(p.numel() for p in params.values()) / 1e9:.2f} B | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
