#!/usr/bin/env python3
"""Generates the tokenizer parity fixture: corpus.bin and ids.bin (int32 little endian).

The corpus is produced deterministically from a fixed seed (no text is copied from
anywhere): English-like words and sentences, Chinese characters, other scripts, Python and
C snippets, emoji (including ZWJ sequences, flags, skin tones), numbers, whitespace runs and
invalid UTF-8 byte sequences. ids.bin holds the ids of the reference tokenizer
(rwkv.rwkv_tokenizer.TRIE_TOKENIZER from the `rwkv` pip package) for those bytes.

Usage: python3 -m pip install rwkv && python3 make_corpus.py
(the vocabulary is taken from $RWKVPEFT_WORLD_VOCAB, else from the rwkv package).
"""
import os
import random
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
TARGET_BYTES = 160 * 1024

WORDS = ("the of and to in is was for on that with as by it at from this be are or an "
         "have not which but all were when we there can been has more one will their if "
         "model token training data loss learning rate batch layer weight gradient value "
         "state time mix channel matrix vector function return print error file line "
         "system memory device kernel thread buffer window sample epoch step adapter rank "
         "alpha user assistant question answer instruction response hello world quick "
         "brown fox jumps over lazy dog river mountain city garden window table chair "
         "running walked thinking beautiful probably international configuration").split()

CJK_COMMON = "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面而方后多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使点从业本去把性好应开它合还因由其些然前外天政四日那社义事平形相全表间样与关各重新线内数正心反你明看原又么利比或但质气第向道命此变条只没结解问意建月公无系军很情者最立代想已通并提直题党程展五果料象员革位入常文总次品式活设及管特件长求老头基资边流路级少图山统接知较将组见计别她手角期根论运农指几九区强放决西被干做必战先回则任取据处队南给色光门即保治北造百规热领七海口东导器压志世金增争济阶油思术极交受联什认六共权收证改清己美再采转更单风切打白教速花带安场身车例真务具万每目至达走积示议声报斗完类八离华名确才科张信马节话米整空元况今集温传土许步群广石记需段研界拉林律叫且究观越织装影算低持音众书布复容儿须际商非验连断深难近矿千周委素技备半办青省列习响约支般史感劳便团往酸历市克何除消构府称太准精值号率族维划选标写存候毛亲快效斯院查江型眼王按格养易置派层片始却专状育厂京识适属圆包火住调满县局照参红细引听该铁价严龙飞"

SCRIPTS = [
    "Привет мир, как дела? Обучение модели идёт хорошо.",
    "こんにちは世界。トークナイザーのテストです。",
    "안녕하세요 세계. 토크나이저 시험입니다.",
    "مرحبا بالعالم، هذا اختبار.",
    "Γειά σου κόσμε. Δοκιμή.",
    "Ça va? Über naïve café façade — déjà vu… «quotes» ‘single’ “double”",
    "हिन्दी परीक्षण वाक्य।",
    "ไทย ทดสอบ ภาษา",
    "Tiếng Việt có dấu: ắ ằ ẳ ẵ ặ",
]

EMOJI = [
    "😀", "😂", "🥲", "🤖", "🚀", "🔥", "✨", "❤️", "👍", "👍🏽", "👋🏿", "🎉", "🐍", "🦀",
    "👩\u200d💻", "👨\u200d👩\u200d👧\u200d👦", "🏳️\u200d🌈", "🧑🏾\u200d🚀", "👁️\u200d🗨️",
    "🇺🇸", "🇨🇳", "🇯🇵", "🇩🇪", "#️⃣", "1️⃣", "©️", "™",
]

INVALID_UTF8 = [
    b"\x80", b"\xbf", b"\x80\x80\x80", b"\xff", b"\xfe", b"\xff\xfe\xfd",
    b"\xe4\xb8", b"\xe4", b"\xf0\x9f\x98", b"\xf0\x9f", b"\xc3", b"\xc0\x80",
    b"\xed\xa0\x80", b"\xf5\x80\x80\x80", b"\xe0\x80\xaf", b"\x00", b"\x00\x01\x02",
    b"\x1b[0m", b"\x7f", b"\x17",
]


def word(rng):
    if rng.random() < 0.85:
        return rng.choice(WORDS)
    letters = "abcdefghijklmnopqrstuvwxyz"
    return "".join(rng.choice(letters) for _ in range(rng.randint(2, 14)))


def sentence(rng):
    n = rng.randint(4, 20)
    ws = [word(rng) for _ in range(n)]
    ws[0] = ws[0].capitalize()
    s = " ".join(ws)
    if rng.random() < 0.3:
        k = rng.randint(1, n - 1)
        s = " ".join(ws[:k]) + ", " + " ".join(ws[k:])
    return s + rng.choice([".", ".", ".", "?", "!", ":", ";", "..."])


def chinese(rng):
    out = []
    for _ in range(rng.randint(5, 40)):
        if rng.random() < 0.8:
            out.append(rng.choice(CJK_COMMON))
        else:
            out.append(chr(rng.randint(0x4E00, 0x9FFF)))
        if rng.random() < 0.08:
            out.append(rng.choice("，。！？、；："))
    return "".join(out)


def ident(rng):
    return "_".join(rng.choice(WORDS) for _ in range(rng.randint(1, 3)))


def python_snippet(rng):
    f, a, b = ident(rng), ident(rng), ident(rng)
    ind = " " * rng.choice([4, 4, 2, 8])
    lines = [
        f"def {f}({a}, {b}={rng.randint(0, 100)}):",
        f'{ind}"""{sentence(rng)}"""',
        f"{ind}if {a} is None or len({a}) == 0:",
        f"{ind}{ind}return []",
        f"{ind}result = [x * {b} for x in {a} if x % {rng.randint(2, 9)} != 0]",
        f"{ind}print(f\"{{{a}!r}}: {{len(result)}}\")",
        f"{ind}return {{'n': len(result), 'sum': sum(result)}}",
        "",
    ]
    return "\n".join(lines)


def c_snippet(rng):
    f, a = ident(rng), ident(rng)
    n = rng.randint(1, 4096)
    body = [
        f"static int {f}(const float *{a}, size_t n) {{",
        f"\tfor (size_t i = 0; i < n; i++) {{",
        f"\t\tif ({a}[i] > {rng.random():.6f}f) return (int)i; /* {word(rng)} */",
        "\t}",
        f"\treturn -{n};",
        "}",
        f"#define {f.upper()}_MAX 0x{rng.randint(0, 0xFFFF):04X}",
        "",
    ]
    return ("\r\n" if rng.random() < 0.2 else "\n").join(body)


def numbers(rng):
    parts = []
    for _ in range(rng.randint(3, 12)):
        k = rng.randint(0, 6)
        if k == 0:
            parts.append(str(rng.randint(0, 10 ** rng.randint(1, 18))))
        elif k == 1:
            parts.append(f"{rng.uniform(-1e6, 1e6):.{rng.randint(0, 8)}f}")
        elif k == 2:
            parts.append(f"{rng.uniform(0, 1):.3e}")
        elif k == 3:
            parts.append(f"{rng.randint(1900, 2100)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}")
        elif k == 4:
            parts.append(f"0x{rng.randint(0, 2 ** 32):x}")
        elif k == 5:
            parts.append(f"{rng.randint(0, 100)}%")
        else:
            parts.append(f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}")
    return rng.choice([" ", ", ", "\t", " | "]).join(parts)


def whitespace(rng):
    return "".join(rng.choice([" ", "  ", "\t", "\n", "\n\n", "\r\n", "    ", "\u3000", "\u00a0"])
                   for _ in range(rng.randint(1, 12)))


def emoji(rng):
    return "".join(rng.choice(EMOJI) + rng.choice(["", " ", "", "!"]) for _ in range(rng.randint(1, 8)))


def chat(rng):
    return f"User: {sentence(rng)}\n\nAssistant: {sentence(rng)} {sentence(rng)}\n\n"


def make_corpus(seed=20230424):
    rng = random.Random(seed)
    out = bytearray()
    gens = [sentence, sentence, sentence, chinese, chinese, python_snippet, c_snippet, numbers,
            whitespace, emoji, chat, lambda r: r.choice(SCRIPTS)]
    while len(out) < TARGET_BYTES:
        g = rng.choice(gens)
        out += g(rng).encode("utf-8")
        if rng.random() < 0.12:
            out += rng.choice(INVALID_UTF8)
        out += rng.choice([b" ", b"\n", b"", b"\n\n", b" "])
    return bytes(out)


def vocab_path():
    p = os.environ.get("RWKVPEFT_WORLD_VOCAB")
    if p:
        return p
    import rwkv  # noqa: PLC0415
    return os.path.join(os.path.dirname(rwkv.__file__), "rwkv_vocab_v20230424.txt")


def main():
    from rwkv.rwkv_tokenizer import TRIE_TOKENIZER

    corpus = make_corpus()
    tok = TRIE_TOKENIZER(vocab_path())
    ids = tok.encodeBytes(corpus)
    assert tok.decodeBytes(ids) == corpus
    with open(os.path.join(HERE, "corpus.bin"), "wb") as f:
        f.write(corpus)
    with open(os.path.join(HERE, "ids.bin"), "wb") as f:
        f.write(struct.pack("<%di" % len(ids), *ids))
    print(f"corpus.bin: {len(corpus)} bytes, ids.bin: {len(ids)} ids", file=sys.stderr)


if __name__ == "__main__":
    main()
