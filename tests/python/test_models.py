#!/usr/bin/python3
"""lina.Model and lina.Tokenizer on checkpoints written by `lina train`: the tokens of
Model.generate equal `lina generate`'s for the same seed, Model.loss equals `lina eval`,
the logits agree with the loss, the tokenizer agrees with `lina tokenizer encode`,
training from Python through the parameter buffer, and bad input raising."""

import json
import os
import shutil
import subprocess
import tempfile

import harness
from harness import check, raises, run

import torch
import torch.nn.functional as F

import lina

LINA = os.environ.get("LINA_BIN", os.path.join(harness.ROOT, "build", "lina"))
tmp = tempfile.mkdtemp(prefix="lina-py-")


def sh(*args, text_in=None):
    r = subprocess.run([LINA, *args], capture_output=True, input=text_in)
    if r.returncode:
        raise RuntimeError(f"lina {' '.join(args)}: {r.stderr.decode(errors='replace')}")
    return r.stdout


def corpus():
    words = ("the light of the world shines on every field and river while the wind "
             "carries seeds over the hills and the people sing of bread and water").split()
    lines, s = [], 7
    for i in range(400):
        line = []
        for j in range(12):
            s = (s * 1103515245 + 12345) % 2**31
            line.append(words[s % len(words)])
        lines.append(" ".join(line) + ".")
    return "\n".join(lines) + "\n"


def setup_runs():
    text = os.path.join(tmp, "text.txt")
    with open(text, "w") as f:
        f.write(corpus())
    tokp = os.path.join(tmp, "tokenizer.json")
    sh("tokenizer", "train", "--in", text, "--vocab", "320", "--out", tokp)
    data = os.path.join(tmp, "train.tok")
    sh("tokenizer", "encode", "--tokenizer", tokp, "--in", text, "--out", data, "--format", "tok")
    runs = {}
    cfgs = {
        "gla": {"model_type": "gla", "hidden_size": 64, "num_hidden_layers": 2, "num_heads": 2,
                "vocab_size": 320, "intermediate_size": 128, "tie_word_embeddings": True},
        # a hybrid: the decode state holds a KV cache for the attention layer
        "gated_deltanet+attn": {"model_type": "gated_deltanet", "hidden_size": 64, "num_hidden_layers": 2,
                                "num_heads": 2, "head_dim": 32, "vocab_size": 320, "intermediate_size": 128,
                                "attn": {"layers": [1], "num_heads": 2}},
    }
    for name, cfg in cfgs.items():
        d = os.path.join(tmp, name.replace("+", "_"))
        os.makedirs(d)
        cp = os.path.join(d, "config.json")
        with open(cp, "w") as f:
            json.dump(cfg, f)
        sh("train", "--config", cp, "--data", data, "--tokenizer", tokp, "--out", os.path.join(d, "run"),
           "--steps", "30", "--batch", "4", "--seq-len", "32", "--lr", "3e-3", "-t", "1", "--quiet")
        runs[name] = os.path.join(d, "run")
    return text, tokp, runs


def model_tests(name, rdir, text):
    m = lina.Model.load(rdir)         # a run directory: its checkpoint/
    tok = lina.Tokenizer.load(rdir)
    check(f"{name}: loads ({m.num_params} parameters, vocab {m.vocab_size})",
          m.vocab_size == 320 and m.num_params > 0, repr(m))
    prompt = "the light of"
    for seed, temp in ((7, "0.8"), (11, "1.0"), (3, "0")):
        cli = sh("generate", "--model", rdir, "--prompt", prompt, "-n", "40", "--seed", str(seed),
                 "--temperature", temp, "-t", "1").decode("utf-8", "replace")
        new = m.generate(tok.encode(prompt), 40, temperature=float(temp), seed=seed)
        py = prompt + tok.decode(new) + "\n"
        check(f"{name}: generate seed={seed} temperature={temp} = lina generate", py == cli,
              f"python {py!r}\n#   lina   {cli!r}")
    # loss = lina eval over the same windows
    T = 32
    ev = json.loads(sh("eval", "--model", rdir, "--text", text, "--seq-len", str(T), "--json", "-t", "1"))
    with open(text) as f:
        ids = tok.encode(f.read())
    nwin = (len(ids) - 1) // T
    wins = torch.tensor([ids[w * T:w * T + T + 1] for w in range(nwin)])
    loss = m.loss(wins)
    check(f"{name}: loss = lina eval ({loss:.6f} vs {ev['loss']:.6f})", abs(loss - ev["loss"]) < 2e-5,
          f"differ by {abs(loss - ev['loss']):.3g}")
    # logits: their cross-entropy is the loss; labels with -100 are skipped
    logits = m(wins[:3])
    ce = float(F.cross_entropy(logits[:, :-1].reshape(-1, m.vocab_size).double(), wins[:3, 1:].reshape(-1)))
    check(f"{name}: logits give the loss", abs(ce - m.loss(wins[:3])) < 1e-5, f"{ce} vs {m.loss(wins[:3])}")
    lab = wins[:3].clone()
    lab[:, 1:10] = lina.models.IGNORE_INDEX
    ce2 = float(F.cross_entropy(logits[:, 9:-1].reshape(-1, m.vocab_size).double(), wins[:3, 10:].reshape(-1)))
    check(f"{name}: ignored labels", abs(ce2 - m.loss(wins[:3], lab)) < 1e-5, f"{ce2} vs {m.loss(wins[:3], lab)}")
    # prompt of one sequence as a 1-D tensor = the first row of the batch
    one = m(wins[0])
    check(f"{name}: [T] input is batch 1", float((one[0] - logits[0]).abs().max()) < 1e-4, "differs")
    return m, tok, wins


def tokenizer_tests(tokp, text):
    tok = lina.Tokenizer.load(tokp)
    with open(text) as f:
        s = f.read()[:2000]
    cli = [int(x) for x in sh("tokenizer", "encode", "--tokenizer", tokp, "--format", "text",
                              text_in=s.encode()).split()]
    check("tokenizer: encode = lina tokenizer encode", tok.encode(s) == cli, f"{tok.encode(s)[:10]} vs {cli[:10]}")
    odd = "héllo wörld \u2581 \x00 \U0001F600".encode() + b"\xff\xfe"
    check("tokenizer: decode(encode(bytes)) round trip", tok.decode_bytes(tok.encode(odd)) == odd, "differs")
    check("tokenizer: special token id", tok.token_id("<|endoftext|>") == tok.vocab_size - 1,
          str(tok.token_id("<|endoftext|>")))
    raises("tokenizer: id out of range", ValueError, "", lambda: tok.decode([tok.vocab_size + 5]))
    raises("tokenizer: bad text type", TypeError, "text must be str or bytes", lambda: tok.encode(5))
    raises("tokenizer: missing file", FileNotFoundError, "nope.json",
           lambda: lina.Tokenizer.load(os.path.join(tmp, "nope.json")))


def training_tests(m, wins):
    """A torch.optim optimizer over the parameter buffer, with train_step's gradients."""
    p = m.parameters()
    before = m.loss(wins)
    opt = torch.optim.AdamW([p], lr=3e-3, weight_decay=0.0)
    for i in range(10):
        m.zero_grad()
        m.train_step(wins[(i % 4) * 4:(i % 4) * 4 + 4])
        opt.step()
    after = m.loss(wins)
    check(f"train from Python: loss falls ({before:.4f} -> {after:.4f})", after < before, "")
    named = m.named_parameters()
    check("named_parameters: FLA names, views of the buffer",
          "lm_head.weight" not in named and named["model.embeddings.weight"].shape == (320, 64) and
          named["model.embeddings.weight"].data_ptr() == p.data_ptr(), str(list(named)[:3]))
    # save and reload: the same losses
    out = os.path.join(tmp, "saved")
    m.save(out)
    check("save + load", abs(lina.Model.load(out).loss(wins) - after) < 1e-6, "")


def bad_input_tests(m):
    raises("input_ids out of vocabulary", ValueError, "input_ids holds 999", lambda: m(torch.tensor([[1, 999]])))
    raises("float input_ids", TypeError, "input_ids must hold integer", lambda: m(torch.rand(1, 4)))
    raises("labels shape", ValueError, "labels has shape", lambda: m.loss([[1, 2, 3]], [[1, 2]]))
    raises("loss of one token", ValueError, "at least 2 tokens", lambda: m.loss([[1]]))
    raises("negative max_new_tokens", ValueError, "max_new_tokens", lambda: m.generate([1], -1))
    raises("top_p 0", ValueError, "top_p", lambda: m.generate([1], 3, top_p=0.0))
    raises("2-D prompt", ValueError, "prompt_ids", lambda: m.generate([[1, 2]], 3))
    raises("missing directory", FileNotFoundError, "nowhere", lambda: lina.Model.load(os.path.join(tmp, "nowhere")))
    empty = os.path.join(tmp, "empty")
    os.makedirs(empty)
    raises("directory without a checkpoint", ValueError, "config.json", lambda: lina.Model.load(empty))


def main():
    text, tokp, runs = setup_runs()
    tokenizer_tests(tokp, text)
    kept = None
    for name, rdir in runs.items():
        r = model_tests(name, rdir, text)
        if name == "gla":
            kept = r
    m, tok, wins = kept
    training_tests(m, wins)
    bad_input_tests(m)


try:
    run("models", main)
finally:
    shutil.rmtree(tmp, ignore_errors=True)
harness.finish()
