#!/usr/bin/env python3
"""An independent reference for the Rust embedder: a BERT forward pass in plain numpy.

    reference_embed.py MODEL_DIR > reference.json

Reads `config.json`, `vocab.txt` and `model.safetensors` (with the `safetensors` package's numpy
loader), tokenises a few fixed sentences with its own WordPiece (BERT's basic tokenizer:
lower-case, strip accents, split on whitespace and punctuation; then greedy longest-match
sub-words), runs each sentence alone through the encoder, mean-pools over its tokens and
L2-normalises. Prints {"sentences": [...], "ids": [[...]], "vectors": [[...]]}. Nothing here
calls the gateway's code or a tokenizer library.
"""
import json
import math
import sys
import unicodedata

import numpy as np
from safetensors.numpy import load_file

SENTENCES = [
    "The cat sits on the mat.",
    "A dog is playing in the park.",
    "How do I reset my password?",
    "Quantum computers use qubits, not bits!",
    "hello",
]


def load_vocab(path):
    with open(path, encoding="utf-8") as f:
        return {line.rstrip("\n"): i for i, line in enumerate(f)}


def is_punct(ch):
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def basic_tokens(text):
    text = unicodedata.normalize("NFD", text.lower())
    text = "".join(c for c in text if unicodedata.category(c) != "Mn")
    out, word = [], ""
    for ch in text:
        if ch.isspace():
            if word:
                out.append(word)
            word = ""
        elif is_punct(ch):
            if word:
                out.append(word)
            out.append(ch)
            word = ""
        else:
            word += ch
    if word:
        out.append(word)
    return out


def wordpiece(word, vocab):
    pieces, start = [], 0
    while start < len(word):
        end = len(word)
        while end > start:
            piece = word[start:end] if start == 0 else "##" + word[start:end]
            if piece in vocab:
                pieces.append(vocab[piece])
                break
            end -= 1
        if end == start:
            return [vocab["[UNK]"]]
        start = end
    return pieces


def tokenize(text, vocab):
    ids = [vocab["[CLS]"]]
    for w in basic_tokens(text):
        ids.extend(wordpiece(w, vocab))
    ids.append(vocab["[SEP]"])
    return ids


def layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


_erf = np.vectorize(math.erf)


def gelu(x):
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def forward(ids, t, cfg):
    eps = cfg["layer_norm_eps"]
    heads = cfg["num_attention_heads"]
    n = len(ids)
    x = t["embeddings.word_embeddings.weight"][ids]
    x = x + t["embeddings.position_embeddings.weight"][:n]
    x = x + t["embeddings.token_type_embeddings.weight"][0]
    x = layer_norm(x, t["embeddings.LayerNorm.weight"], t["embeddings.LayerNorm.bias"], eps)

    def lin(h, name):
        return h @ t[name + ".weight"].T + t[name + ".bias"]

    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        d = x.shape[1] // heads
        q = lin(x, p + "attention.self.query").reshape(n, heads, d).transpose(1, 0, 2)
        k = lin(x, p + "attention.self.key").reshape(n, heads, d).transpose(1, 0, 2)
        v = lin(x, p + "attention.self.value").reshape(n, heads, d).transpose(1, 0, 2)
        s = q @ k.transpose(0, 2, 1) / math.sqrt(d)
        s = np.exp(s - s.max(-1, keepdims=True))
        s = s / s.sum(-1, keepdims=True)
        ctx = (s @ v).transpose(1, 0, 2).reshape(n, heads * d)
        a = lin(ctx, p + "attention.output.dense")
        x = layer_norm(a + x, t[p + "attention.output.LayerNorm.weight"],
                       t[p + "attention.output.LayerNorm.bias"], eps)
        h = gelu(lin(x, p + "intermediate.dense"))
        h = lin(h, p + "output.dense")
        x = layer_norm(h + x, t[p + "output.LayerNorm.weight"], t[p + "output.LayerNorm.bias"], eps)
    return x


def main():
    model_dir = sys.argv[1]
    with open(f"{model_dir}/config.json") as f:
        cfg = json.load(f)
    vocab = load_vocab(f"{model_dir}/vocab.txt")
    raw = load_file(f"{model_dir}/model.safetensors")
    t = {}
    for name, value in raw.items():
        name = name[len("bert."):] if name.startswith("bert.") else name
        t[name] = value.astype(np.float64)
    all_ids, vectors = [], []
    for s in SENTENCES:
        ids = tokenize(s, vocab)
        h = forward(ids, t, cfg)
        v = h.mean(0)
        v = v / np.linalg.norm(v)
        all_ids.append(ids)
        vectors.append([float(x) for x in v])
    json.dump({"sentences": SENTENCES, "ids": all_ids, "vectors": vectors}, sys.stdout)


if __name__ == "__main__":
    main()
