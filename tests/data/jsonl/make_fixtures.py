#!/usr/bin/env python3
"""Writes the jsonl fixtures and what the reference pipeline makes of them.

  sample.jsonl           text records (with a blank line, a "" record, unicode, escapes)
  sample_ref.bin/.idx    json2binidx's output for it (--append-eod, RWKVTokenizer): each
                         non-empty text tokenized by the reference tokenizer + EOD 0, one
                         sequence per document, int32 (the tokenizer reports vocab 65525),
                         doc_idx = 0..n. Written here with struct, like Megatron's writer.
  sft.jsonl              records with "query"/"response"
  sft_ref.txt            per record: len(tokens(prompt)) then tokens(prompt + response +
                         "\\n\\x17"), the reference SFT preprocessing (spec §5.5)

The texts are generated here (no external text). Needs the `rwkv` pip package.
"""
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))

SAMPLE = [
    "User: hello there\n\nAssistant: General Kenobi-like greeting, with a comma.",
    "",
    "第二个文档：中文和English混合。",
    "tabs\tand\nnewlines\r\n and \"quotes\" and \\backslashes\\",
    "emoji 👩‍💻 🇺🇸 ok",
    "0 1 2 3 digits 1234567890",
    "a",
]

SFT = [
    ("What is 2+2?", "4"),
    ("Write a haiku about trees.", "Green leaves in the wind\nroots drink the quiet rain\nbranches hold the sky"),
    ("翻译：你好", "Hello"),
    ("Empty response next", ""),
]

PROMPT = ("Below is an instruction that describes a task. "
          "Write a response that appropriately completes the request.\n\n"
          "### Instruction:\n{instruction}\n\n### Response:")


def vocab_path():
    p = os.environ.get("RWKVPEFT_WORLD_VOCAB")
    if p:
        return p
    import rwkv
    return os.path.join(os.path.dirname(rwkv.__file__), "rwkv_vocab_v20230424.txt")


def write_binidx(prefix, docs):
    with open(prefix + ".bin", "wb") as f:
        for d in docs:
            f.write(struct.pack("<%di" % len(d), *d))
    sizes = [len(d) for d in docs]
    ptrs, a = [], 0
    for s in sizes:
        ptrs.append(a)
        a += 4 * s
    doc_idx = list(range(len(docs) + 1))
    with open(prefix + ".idx", "wb") as f:
        f.write(b"MMIDIDX\x00\x00" + struct.pack("<QBQQ", 1, 4, len(sizes), len(doc_idx)))
        f.write(struct.pack("<%di" % len(sizes), *sizes))
        f.write(struct.pack("<%dq" % len(ptrs), *ptrs))
        f.write(struct.pack("<%dq" % len(doc_idx), *doc_idx))


def main():
    from rwkv.rwkv_tokenizer import TRIE_TOKENIZER
    tok = TRIE_TOKENIZER(vocab_path())

    with open(os.path.join(HERE, "sample.jsonl"), "w", encoding="utf-8") as f:
        for i, t in enumerate(SAMPLE):
            f.write(json.dumps({"id": i, "text": t}, ensure_ascii=(i % 2 == 0)) + "\n")
            if i == 2:
                f.write("\n")  # a blank line
    docs = [tok.encode(t) + [0] for t in SAMPLE if t]
    write_binidx(os.path.join(HERE, "sample_ref"), docs)

    with open(os.path.join(HERE, "sft.jsonl"), "w", encoding="utf-8") as f:
        for q, r in SFT:
            f.write(json.dumps({"query": q, "response": r}, ensure_ascii=False) + "\n")
    with open(os.path.join(HERE, "sft_ref.txt"), "w") as f:
        for q, r in SFT:
            src = PROMPT.format_map(dict(instruction=q))
            full = src + f"{r}\n\x17"
            f.write("%d %s\n" % (len(tok.encode(src)), " ".join(map(str, tok.encode(full)))))


if __name__ == "__main__":
    main()
