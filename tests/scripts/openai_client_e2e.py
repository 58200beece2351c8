"""Calls a running `hartonomous serve` with the official OpenAI Python client (the `openai` package
from PyPI, pinned in scripts/lib.sh) over HTTPS, trusting only the daemon's own certificate.

    python3 tests/scripts/openai_client_e2e.py --base-url https://localhost:PORT/v1 \
        --cert DATA_DIR/tls/hartonomous-cert.pem [--model SmolLM2-135M-Instruct]

Both generation endpoints, whole and streamed, plus chat log-probabilities and one refusal. Greedy
answers must equal the float64 numpy reference's (`greedy[*].text` of
tests/fixtures/models/smollm2_reference.json, made by tests/scripts/make_llama_reference.py), cut
at the first `<|im_end|>` where the server stops. Prints a JSON summary; exits 1 naming the first
check that failed. runtime/tests/serve_openai_client.rs runs it against the real binary.
"""

import argparse
import json
import math
import ssl
import sys
from pathlib import Path

import openai

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "tests/fixtures/models/smollm2_reference.json"
CHAT_PROMPT = "What is the capital of France?"
PLAIN_PROMPT = "The history of the printing press"
MAX_TOKENS = 32
EOS_ID = 2  # <|im_end|>


class Failed(Exception):
    pass


def check(ok, what):
    if not ok:
        raise Failed(what)


def reference(name, prompt):
    """The reference's greedy answer to case `name`: (text, finish_reason, completion tokens)."""
    doc = json.loads(REFERENCE.read_text())
    case = next((c for c in doc["greedy"] if c["name"] == name), None)
    check(case is not None, f"{REFERENCE} has no greedy case {name!r}")
    check(prompt in case["prompt_text"], f"the reference case {name!r} is not about {prompt!r}: {case['prompt_text']!r}")
    text, ids = case["text"], case["generated_ids"]
    cut = text.find("<|im_end|>")
    if cut >= 0:
        return text[:cut], "stop", ids.index(EOS_ID)
    return text, "length", len(ids)


def check_usage(usage, what, completion_tokens):
    check(usage is not None, f"{what}: no usage")
    check(
        usage.prompt_tokens + usage.completion_tokens == usage.total_tokens,
        f"{what}: prompt_tokens {usage.prompt_tokens} + completion_tokens {usage.completion_tokens} != total_tokens {usage.total_tokens}",
    )
    check(usage.prompt_tokens > 0, f"{what}: prompt_tokens is {usage.prompt_tokens}")
    check(
        usage.completion_tokens == completion_tokens,
        f"{what}: completion_tokens {usage.completion_tokens}, the reference generated {completion_tokens}",
    )


def check_answer(what, text, finish, want):
    want_text, want_finish, _ = want
    check(text == want_text, f"{what}: text {text!r}, the reference's is {want_text!r}")
    check(finish == want_finish, f"{what}: finish_reason {finish!r}, expected {want_finish!r}")


def completions(client, model, want):
    whole = client.completions.create(model=model, prompt=PLAIN_PROMPT, max_tokens=MAX_TOKENS, temperature=0)
    check(whole.object == "text_completion", f"completions: object {whole.object!r}")
    check(len(whole.choices) == 1, f"completions: {len(whole.choices)} choices")
    check_answer("completions", whole.choices[0].text, whole.choices[0].finish_reason, want)
    check_usage(whole.usage, "completions", want[2])

    stream = client.completions.create(
        model=model, prompt=PLAIN_PROMPT, max_tokens=MAX_TOKENS, temperature=0,
        stream=True, stream_options={"include_usage": True},
    )
    pieces, finishes, usage, chunks = [], [], None, 0
    for chunk in stream:
        chunks += 1
        check(chunk.object == "text_completion", f"completions stream: chunk object {chunk.object!r}")
        for choice in chunk.choices:
            pieces.append(choice.text or "")
            if choice.finish_reason is not None:
                finishes.append(choice.finish_reason)
        if chunk.usage is not None:
            check(usage is None, "completions stream: more than one usage chunk")
            check(not chunk.choices, "completions stream: the usage chunk has choices")
            usage = chunk.usage
    streamed = "".join(pieces)
    check(len(finishes) == 1, f"completions stream: finish_reasons {finishes}, expected exactly one")
    check(streamed == whole.choices[0].text, f"completions: streamed {streamed!r} != whole {whole.choices[0].text!r}")
    check_answer("completions stream", streamed, finishes[0], want)
    check_usage(usage, "completions stream", want[2])
    check(usage.prompt_tokens == whole.usage.prompt_tokens, "completions: streamed and whole prompt_tokens differ")
    return {"text": whole.choices[0].text, "finish_reason": finishes[0], "usage": whole.usage.model_dump(), "stream_chunks": chunks}


def chat(client, model, want):
    messages = [{"role": "user", "content": CHAT_PROMPT}]
    whole = client.chat.completions.create(model=model, messages=messages, max_tokens=MAX_TOKENS, temperature=0)
    check(whole.object == "chat.completion", f"chat: object {whole.object!r}")
    check(len(whole.choices) == 1, f"chat: {len(whole.choices)} choices")
    message = whole.choices[0].message
    check(message.role == "assistant", f"chat: role {message.role!r}")
    check_answer("chat", message.content, whole.choices[0].finish_reason, want)
    check_usage(whole.usage, "chat", want[2])

    stream = client.chat.completions.create(
        model=model, messages=messages, max_tokens=MAX_TOKENS, temperature=0,
        stream=True, stream_options={"include_usage": True},
    )
    pieces, finishes, roles, usage, chunks = [], [], [], None, 0
    for chunk in stream:
        chunks += 1
        check(chunk.object == "chat.completion.chunk", f"chat stream: chunk object {chunk.object!r}")
        for choice in chunk.choices:
            if choice.delta.role is not None:
                roles.append(choice.delta.role)
            pieces.append(choice.delta.content or "")
            if choice.finish_reason is not None:
                finishes.append(choice.finish_reason)
        if chunk.usage is not None:
            check(usage is None, "chat stream: more than one usage chunk")
            check(not chunk.choices, "chat stream: the usage chunk has choices")
            usage = chunk.usage
    streamed = "".join(pieces)
    check(roles[:1] == ["assistant"], f"chat stream: delta roles {roles}, expected the first to be 'assistant'")
    check(len(finishes) == 1, f"chat stream: finish_reasons {finishes}, expected exactly one")
    check(streamed == message.content, f"chat: streamed {streamed!r} != whole {message.content!r}")
    check_answer("chat stream", streamed, finishes[0], want)
    check_usage(usage, "chat stream", want[2])
    return {"text": message.content, "finish_reason": finishes[0], "usage": whole.usage.model_dump(), "stream_chunks": chunks}


def chat_logprobs(client, model, want):
    """Greedy, so every chosen token is the first of its alternatives, with the same logprob."""
    reply = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": CHAT_PROMPT}], max_tokens=MAX_TOKENS,
        temperature=0, logprobs=True, top_logprobs=2,
    )
    choice = reply.choices[0]
    check_answer("chat logprobs", choice.message.content, choice.finish_reason, want)
    check(choice.logprobs is not None and choice.logprobs.content, "chat logprobs: no logprobs.content")
    content = choice.logprobs.content
    check(
        len(content) == reply.usage.completion_tokens,
        f"chat logprobs: {len(content)} entries for {reply.usage.completion_tokens} completion tokens",
    )
    for i, t in enumerate(content):
        check(len(t.top_logprobs) == 2, f"chat logprobs: token {i} ({t.token!r}) has {len(t.top_logprobs)} alternatives, expected 2")
        check(math.isfinite(t.logprob) and t.logprob <= 0, f"chat logprobs: token {i} logprob {t.logprob}")
        first, second = t.top_logprobs
        check(first.logprob >= second.logprob, f"chat logprobs: token {i} alternatives out of order: {first} then {second}")
        check(
            first.token == t.token and abs(first.logprob - t.logprob) < 1e-4,
            f"chat logprobs: greedy token {i} {t.token!r} ({t.logprob}) is not its first alternative {first.token!r} ({first.logprob})",
        )
        check(t.bytes == list(t.token.encode()), f"chat logprobs: token {i} bytes {t.bytes} do not encode {t.token!r}")
    joined = "".join(t.token for t in content)
    check(joined == choice.message.content, f"chat logprobs: tokens join to {joined!r}, not the content {choice.message.content!r}")
    return [{"token": t.token, "logprob": round(t.logprob, 4), "top": [a.token for a in t.top_logprobs]} for t in content]


def refusal(client, model):
    try:
        client.completions.create(model=model, prompt=PLAIN_PROMPT, max_tokens=4, temperature=5)
    except openai.BadRequestError as e:
        check(e.param == "temperature", f"temperature=5: the 400's param is {e.param!r}, body {e.body}")
        check(isinstance(e.body, dict) and e.body.get("message"), f"temperature=5: no error message in {e.body}")
        return {"status": e.status_code, "param": e.param, "type": e.type, "message": e.body["message"]}
    raise Failed("temperature=5 was accepted; expected openai.BadRequestError")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", required=True, help="https://localhost:PORT/v1")
    parser.add_argument("--cert", required=True, help="the daemon's certificate (PEM), the only one trusted")
    parser.add_argument("--model", default="SmolLM2-135M-Instruct")
    parser.add_argument("--api-key", default="unused", help="the tenant's key, sent as `Authorization: Bearer`")
    args = parser.parse_args()

    # TLS verified against the daemon's certificate alone (it names localhost), no system roots.
    tls = ssl.create_default_context(cafile=args.cert)
    client = openai.OpenAI(
        base_url=args.base_url, api_key=args.api_key, max_retries=0, timeout=600,
        http_client=openai.DefaultHttpxClient(verify=tls),
    )
    summary = {"openai": openai.__version__, "base_url": args.base_url, "model": args.model}
    step = "setup"
    try:
        step = "completions"
        summary[step] = completions(client, args.model, reference("plain_printing_press", PLAIN_PROMPT))
        step = "chat"
        summary[step] = chat(client, args.model, reference("chat_capital", CHAT_PROMPT))
        step = "chat_logprobs"
        summary[step] = chat_logprobs(client, args.model, reference("chat_capital", CHAT_PROMPT))
        step = "refusal"
        summary[step] = refusal(client, args.model)
    except Failed as e:
        print(f"FAILED ({step}): {e}", file=sys.stderr)
        return 1
    except openai.APIError as e:
        print(f"FAILED ({step}): {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=1, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
