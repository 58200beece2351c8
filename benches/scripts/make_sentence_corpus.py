"""Writes benches/data/python_doc_sentences.txt: English sentences from the Python documentation
that ships with CPython (the language reference topics of pydoc_data and the docstrings of the
standard library's public modules, functions and classes), for the search benchmarks' real
corpus. The text is the Python Software Foundation's (PSF License 2.0, which allows
redistribution with its notice; see the header of the output).

Sentences are split at '. ' before a capital, kept when 40 to 220 characters long, starting with
a capital and ending with a full stop, with no markup characters; deduplicated and sorted. The
output depends on the Python version (the header names it): the checked-in file was made with
the Python below, and the benchmarks read the file, not this script.

    python3 benches/scripts/make_sentence_corpus.py > benches/data/python_doc_sentences.txt
"""
import contextlib
import importlib
import inspect
import io
import platform
import re
import sys
import warnings

SKIP = {"antigravity", "this", "idlelib", "turtledemo", "tkinter", "turtle"}


def documents():
    import pydoc_data.topics as topics

    yield from topics.topics.values()
    for name in sorted(sys.stdlib_module_names):
        if name.startswith("_") or name in SKIP:
            continue
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                module = importlib.import_module(name)
        except BaseException:
            continue
        yield module.__doc__ or ""
        for attr, obj in vars(module).items():
            if not attr.startswith("_") and (inspect.isfunction(obj) or inspect.isclass(obj)) and getattr(obj, "__module__", "") == name:
                yield obj.__doc__ or ""


def main():
    warnings.filterwarnings("ignore")
    sentences = set()
    for text in documents():
        for paragraph in re.split(r"\n\s*\n", text):
            paragraph = " ".join(paragraph.split())
            for s in re.split(r"(?<=[.!?])\s+(?=[A-Z])", paragraph):
                if 40 <= len(s) <= 220 and s[0].isupper() and s.endswith(".") and not any(c in s for c in "*|>{}[]\\$#@%^~`="):
                    sentences.add(s)
    print(f"# {len(sentences)} sentences from the documentation of Python {platform.python_version()}, by benches/scripts/make_sentence_corpus.py.")
    print("# Copyright (c) 2001 Python Software Foundation; All Rights Reserved. Used under the PSF License Agreement (PSF-2.0).")
    for s in sorted(sentences):
        print(s)


if __name__ == "__main__":
    main()
