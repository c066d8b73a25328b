#!/usr/bin/python3
"""End to end through torch.autograd: a tiny PyTorch language model whose mixer is
lina.ops.chunk_gated_delta_rule trains (its loss falls), and its parameter gradients
match those of the same model in float64 with the reference mixer."""

import harness
from harness import check, run

import torch
import torch.nn as nn
import torch.nn.functional as F

from lina.ops import chunk_gated_delta_rule
import reference as ref


class TinyGDN(nn.Module):
    """embedding -> q, k, v, g, beta projections -> Gated DeltaNet mixer -> output -> logits."""

    def __init__(self, vocab=16, d=32, heads=2, head_k=8, head_v=8, mixer="lina"):
        super().__init__()
        self.h, self.dk, self.dv, self.mixer = heads, head_k, head_v, mixer
        self.emb = nn.Embedding(vocab, d)
        self.q = nn.Linear(d, heads * head_k, bias=False)
        self.k = nn.Linear(d, heads * head_k, bias=False)
        self.v = nn.Linear(d, heads * head_v, bias=False)
        self.a = nn.Linear(d, heads)
        self.b = nn.Linear(d, heads)
        self.o = nn.Linear(heads * head_v, d, bias=False)
        self.head = nn.Linear(d, vocab)

    def forward(self, ids):
        x = self.emb(ids)
        B, T, _ = x.shape
        q = self.q(x).view(B, T, self.h, self.dk)
        k = self.k(x).view(B, T, self.h, self.dk)
        v = self.v(x).view(B, T, self.h, self.dv)
        g = F.logsigmoid(self.a(x))
        beta = self.b(x)
        if self.mixer == "lina":
            o, _ = chunk_gated_delta_rule(q, k, v, g, beta, use_qk_l2norm_in_kernel=True,
                                          use_beta_sigmoid_in_kernel=True)
        else:
            o, _ = ref.delta(ref.l2norm(q), ref.l2norm(k), v, torch.sigmoid(beta), g)
        return self.head(x + self.o(o.reshape(B, T, -1)))


def batch(gen, B=8, T=80, vocab=16):
    """Recall task: the target of each position is the token before it (only the mixer
    carries information across positions)."""
    ids = torch.randint(0, vocab, (B, T), generator=gen)
    return ids[:, 1:], ids[:, :-1]


def gradients_match():
    torch.manual_seed(0)
    m32 = TinyGDN()
    m64 = TinyGDN(mixer="ref").double()
    m64.load_state_dict({k: v.double() for k, v in m32.state_dict().items()})
    ids, tgt = batch(torch.Generator().manual_seed(1))
    F.cross_entropy(m32(ids).flatten(0, 1), tgt.flatten()).backward()
    F.cross_entropy(m64(ids).flatten(0, 1), tgt.flatten()).backward()
    worst, name = 0.0, ""
    for (n, p32), (_, p64) in zip(m32.named_parameters(), m64.named_parameters()):
        e = float((p32.grad.double() - p64.grad).abs().max() / max(1e-3, float(p64.grad.abs().max())))
        if e > worst:
            worst, name = e, n
    check("tiny model: parameter gradients match the float64 reference model", worst <= 5e-4,
          f"{name}.grad off by {worst:.3g}")


def trains():
    torch.manual_seed(0)
    m = TinyGDN()
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(2)
    losses = []
    for _ in range(100):
        ids, tgt = batch(gen)
        loss = F.cross_entropy(m(ids).flatten(0, 1), tgt.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    check(f"tiny model trains: loss falls ({first:.2f} -> {last:.2f})", last < 0.5 * first, f"loss {first:.3f} -> {last:.3f}")


run("gradients", gradients_match)
run("training", trains)
harness.finish()
