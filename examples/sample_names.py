"""Sample new names from an exported character-level language model, with onnxruntime and numpy alone (no
torch).

    sgsc compress --dataset names --data-dir ../shared/data/names --out runs/names
    sgsc export runs/names --out names.onnx
    python examples/sample_names.py names.onnx -n 10 --seed 0

The vocabulary and context length come from the model's metadata (``sgsc.vocab``, ``sgsc.context``); token 0
is the line boundary that starts and ends every name.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import onnxruntime as ort


def load(path: str) -> tuple[ort.InferenceSession, str, int]:
    so = ort.SessionOptions()
    so.add_session_config_entry("session.qdq_matmulnbits_accuracy_level", "0")  # exact weight-only kernels
    session = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    if meta.get("sgsc.task") != "language_model" or "sgsc.vocab" not in meta:
        raise SystemExit(f"{path} is not an sgsc language model (no sgsc.vocab in its metadata)")
    return session, json.loads(meta["sgsc.vocab"]), int(meta["sgsc.context"])


def sample(session: ort.InferenceSession, vocab: str, context: int, n: int, rng: np.random.Generator,
           temperature: float = 1.0) -> list[str]:
    """``n`` names, drawn token by token in one batch; a name ends at the boundary token or the context."""
    ids = np.zeros((n, context), np.int64)
    done = np.zeros(n, bool)
    out = [[] for _ in range(n)]
    for t in range(context - 1):
        logits = session.run(None, {session.get_inputs()[0].name: ids})[0][:, t] / temperature
        p = np.exp(logits - logits.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        nxt = np.array([rng.choice(len(vocab), p=row) for row in p])
        for i, tok in enumerate(nxt):
            if not done[i]:
                if tok == 0:
                    done[i] = True
                else:
                    out[i].append(vocab[tok])
        ids[:, t + 1] = nxt
        if done.all():
            break
    return ["".join(chars) for chars in out]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("-n", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--temperature", type=float, default=1.0)
    args = ap.parse_args()
    session, vocab, context = load(args.model)
    for name in sample(session, vocab, context, args.n, np.random.default_rng(args.seed), args.temperature):
        print(name)


if __name__ == "__main__":
    main()
