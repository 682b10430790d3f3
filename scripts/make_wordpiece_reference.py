#!/usr/bin/env python3
"""Writes tests/data/wordpiece_reference.json: what transformers' tokenizer for
the bundled retrieval fixture (tests/fixtures/blip2-tiny-itm, BERT WordPiece)
returns for strings that exercise every normaliser and pre-tokenizer rule
(accents, CJK, punctuation and symbols, control characters, casing, added
tokens in the text, over-long words), with and without truncation. The file
names the tokenizer folder it was made from (relative to the project root)
and the FNV-1a 64 hash of its tokenizer.json: the test checks the strings
against exactly that file, whatever BLIP2_FIXTURES_DIR says, and fails if the
file changed without this being rerun. The tests read the committed file;
rerun this (transformers from PyPI) to refresh it:
    python3 scripts/make_wordpiece_reference.py
"""
import json
import os

from transformers import AutoTokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURE_REL = "tests/fixtures/blip2-tiny-itm"
FIXTURE = os.path.join(HERE, "..", FIXTURE_REL)
OUT = os.path.join(HERE, "..", "tests", "data", "wordpiece_reference.json")

STRINGS = [
    "a photo of a cat", "A Photo Of A CAT", "an astronaut in a space suit.",
    "Café Münchën naïve résumé", "e\u0301 a\u0300 o\u0308", "我爱北京天安门 and 東京", "한국어 텍스트",
    "hello,world!! (test)... $100 + 50% = [x] {y} <z> ^_^ `q` ~r | s",
    "a\tb\nc\rd\x00e\u200bf\u00adg\ufffdh", "tabs\t\tand   spaces\u3000ideographic",
    "[MASK] a cat [SEP] on [PAD] a mat", "🐱 cat 🐶 dog", "a" * 150, "unaffable unbelievable playing",
    "ΣΑΣ σας", "İstanbul", "ﬁne ligatures", "don't stop-believing", "",
]


def fnv1a64(data):
    """The same 64-bit FNV-1a as tests/parity/tokenizer_parity_test.cc."""
    h = 0xCBF29CE484222325
    for byte in data:
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return "%016x" % h


def main():
    tok = AutoTokenizer.from_pretrained(FIXTURE)
    cases = []
    for text in STRINGS:
        cases.append({"text": text, "max_length": 0, "ids": tok(text)["input_ids"]})
    for text in ["a cup of coffee on a saucer", "an astronaut in a space suit"]:
        for max_length in (4, 6):
            ids = tok(text, truncation=True, max_length=max_length)["input_ids"]
            cases.append({"text": text, "max_length": max_length, "ids": ids})
    normalized = {text: tok.backend_tokenizer.normalizer.normalize_str(text) for text in STRINGS}
    with open(OUT, "w") as f:
        with open(os.path.join(FIXTURE, "tokenizer.json"), "rb") as tok_file:
            digest = fnv1a64(tok_file.read())
        json.dump({"tokenizer_dir": FIXTURE_REL, "tokenizer_json_fnv1a64": digest, "cases": cases,
                   "normalized": normalized}, f, indent=1, ensure_ascii=False)
    print("wrote", len(cases), "cases to", OUT)


if __name__ == "__main__":
    main()
