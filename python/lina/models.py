"""lina's language models and tokenizer from Python.

    model = lina.Model.load("runs/gla-small")        # a run directory or a checkpoint
    tok = lina.Tokenizer.load("runs/gla-small")
    print(tok.decode(model.generate(tok.encode("In the beginning"), 50, seed=1)))

A checkpoint is FLA's format: config.json + model.safetensors (what `lina train` writes,
with tokenizer.json next to them). The model lives in C: its parameters in one buffer,
the decode state of `generate` in a C state object; PyTorch tensors come back as results.
"""

import ctypes
import os

import torch

from . import _lib as L

_lib = L.lib
P = ctypes.POINTER
vp = ctypes.c_void_p
i32p = P(ctypes.c_int32)
_sigs = {
    "lina_model_load": (ctypes.c_int, [ctypes.c_char_p, P(vp)]),
    "lina_model_save": (ctypes.c_int, [vp, ctypes.c_char_p]),
    "lina_model_free": (None, [vp]),
    "lina_model_num_params": (ctypes.c_size_t, [vp]),
    "lina_model_params": (vp, [vp]),
    "lina_model_grads": (vp, [vp]),
    "lina_model_zero_grad": (None, [vp]),
    "lina_model_num_tensors": (ctypes.c_int, [vp]),
    "lina_model_tensor": (ctypes.c_int, [vp, ctypes.c_int, P(ctypes.c_char_p), P(ctypes.c_int),
                                         P(P(ctypes.c_int64)), P(ctypes.c_size_t), P(ctypes.c_int)]),
    "lina_model_train_step": (ctypes.c_int, [vp, vp, vp, ctypes.c_int, ctypes.c_int,
                                             P(ctypes.c_double), P(L.Ws)]),
    "lina_model_eval_loss": (ctypes.c_int, [vp, vp, vp, ctypes.c_int, ctypes.c_int,
                                            P(ctypes.c_double), P(L.Ws)]),
    "lina_model_forward_logits": (ctypes.c_int, [vp, vp, ctypes.c_int, ctypes.c_int, vp, P(L.Ws)]),
    "lina_model_state_create": (ctypes.c_int, [vp, ctypes.c_int, ctypes.c_int, P(vp)]),
    "lina_model_state_free": (None, [vp]),
    "lina_sampler_create": (ctypes.c_int, [ctypes.c_int, ctypes.c_float, ctypes.c_int, ctypes.c_float,
                                           ctypes.c_uint64, P(vp)]),
    "lina_sampler_free": (None, [vp]),
    "lina_generate": (ctypes.c_int, [vp, vp, vp, ctypes.c_int, ctypes.c_int, ctypes.c_int, vp, vp, vp,
                                     vp, P(ctypes.c_int)]),
    "lina_tokenizer_load": (ctypes.c_int, [ctypes.c_char_p, P(vp)]),
    "lina_tokenizer_free": (None, [vp]),
    "lina_tokenizer_vocab_size": (ctypes.c_int, [vp]),
    "lina_tokenizer_token_id": (ctypes.c_int, [vp, ctypes.c_char_p]),
    "lina_tokenizer_encode": (ctypes.c_int, [vp, ctypes.c_char_p, ctypes.c_size_t, P(i32p),
                                             P(ctypes.c_size_t)]),
    "lina_tokenizer_decode": (ctypes.c_int, [vp, vp, ctypes.c_size_t, P(vp), P(ctypes.c_size_t)]),
}
for _name, (_res, _args) in _sigs.items():
    _f = getattr(_lib, _name)
    _f.restype = _res
    _f.argtypes = _args
_libc = ctypes.CDLL(None)
_libc.free.argtypes = [vp]
_libc.free.restype = None

IGNORE_INDEX = -100


def _checkpoint_dir(path, what):
    """A checkpoint directory, or a run directory holding checkpoint/."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"lina: {what}: {path} is not a directory")
    if not os.path.exists(os.path.join(path, "config.json")) and \
            os.path.exists(os.path.join(path, "checkpoint", "config.json")):
        return os.path.join(path, "checkpoint")
    return path


def _check(rc, exc=None):
    if rc:
        msg = (_lib.lina_last_error() or b"").decode("utf-8", "replace")
        if exc is not None:
            raise exc(msg)
        L.check(rc)


def _ids(name, x, vocab, ndim=2):
    """token ids as a contiguous int32 tensor [B, T] (a list, [T] or [B, T] tensor)."""
    if isinstance(x, torch.Tensor):
        t = x
    else:
        try:
            t = torch.as_tensor(x)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"{name} must be a list of ints or an integer tensor") from None
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer token ids, not {t.dtype}")
    if t.device.type != "cpu":
        raise NotImplementedError(f"{name} is on {t.device}; lina runs on the CPU")
    if t.dim() == 1 and ndim == 2:
        t = t[None]
    if t.dim() != ndim or t.numel() == 0:
        raise ValueError(f"{name} must be a non-empty [B, T] batch of token ids, got shape {list(t.shape)}")
    return t.to(torch.int32).contiguous()


def _in_vocab(name, t, vocab, allow_ignore=False):
    bad = (t < 0) | (t >= vocab)
    if allow_ignore:
        bad &= t != IGNORE_INDEX
    if bool(bad.any()):
        v = int(t[bad][0])
        raise ValueError(f"{name} holds {v}, outside the vocabulary [0, {vocab})")


class Model:
    """A causal language model held by lina (any model type lina reads from an FLA config)."""

    def __init__(self, handle, directory):
        self._m = handle
        self._free = _lib.lina_model_free
        self.directory = directory
        self.tensors = {}
        n = _lib.lina_model_num_tensors(handle)
        for i in range(n):
            name, nd, shape, off, dec = ctypes.c_char_p(), ctypes.c_int(), P(ctypes.c_int64)(), \
                ctypes.c_size_t(), ctypes.c_int()
            _check(_lib.lina_model_tensor(handle, i, ctypes.byref(name), ctypes.byref(nd),
                                          ctypes.byref(shape), ctypes.byref(off), ctypes.byref(dec)))
            self.tensors[name.value.decode()] = (tuple(shape[j] for j in range(nd.value)), off.value)
        emb = [s for k, (s, _) in self.tensors.items() if k.endswith("embeddings.weight")]
        self.vocab_size = emb[0][0] if emb else None
        self.num_params = _lib.lina_model_num_params(handle)

    @classmethod
    def load(cls, directory):
        """Load config.json + model.safetensors from a checkpoint directory (or a run
        directory's checkpoint/). Errors: FileNotFoundError, ValueError with lina's message."""
        d = _checkpoint_dir(directory, "Model.load")
        h = vp()
        _check(_lib.lina_model_load(os.fsencode(d), ctypes.byref(h)), ValueError)
        return cls(h, d)

    def __del__(self):
        if getattr(self, "_m", None):
            self._free(self._m)
            self._m = None

    def __repr__(self):
        return f"lina.Model({self.directory!r}, {self.num_params} parameters, vocab {self.vocab_size})"

    def save(self, directory):
        """Write config.json + model.safetensors into directory (created if missing), atomically."""
        _check(_lib.lina_model_save(self._m, os.fsencode(os.fspath(directory))), OSError)

    # ------------------------------------------------------------ forward

    def __call__(self, input_ids):
        """Logits [B, T, vocab] (float32 tensor) of a forward pass over input_ids [B, T]
        (or [T]: then B = 1)."""
        ids = _ids("input_ids", input_ids, self.vocab_size)
        _in_vocab("input_ids", ids, self.vocab_size)
        B, T = ids.shape
        logits = torch.empty(B, T, self.vocab_size, dtype=torch.float32)
        with L.threads_scope():
            rc = _lib.lina_model_forward_logits(self._m, ids.data_ptr(), B, T, logits.data_ptr(),
                                                L.workspace())
        _check(rc)
        return logits

    forward = __call__

    def _pairs(self, input_ids, labels):
        ids = _ids("input_ids", input_ids, self.vocab_size)
        _in_vocab("input_ids", ids, self.vocab_size)
        lab = ids if labels is None else _ids("labels", labels, self.vocab_size)
        if lab.shape != ids.shape:
            raise ValueError(f"labels has shape {list(lab.shape)} but input_ids {list(ids.shape)}")
        _in_vocab("labels", lab, self.vocab_size, allow_ignore=True)
        if ids.shape[1] < 2:
            raise ValueError("input_ids needs at least 2 tokens per sequence for a loss")
        # position t predicts labels[t + 1] (the Hugging Face convention: labels are not pre-shifted)
        return ids[:, :-1].contiguous(), lab[:, 1:].contiguous()

    def loss(self, input_ids, labels=None):
        """Mean next-token cross-entropy (nats): the logits at position t are scored against
        labels[:, t + 1], as Hugging Face causal LMs do; labels=None means input_ids;
        IGNORE_INDEX (-100) labels are skipped."""
        tok, tgt = self._pairs(input_ids, labels)
        out = ctypes.c_double()
        with L.threads_scope():
            rc = _lib.lina_model_eval_loss(self._m, tok.data_ptr(), tgt.data_ptr(), tok.shape[0],
                                           tok.shape[1], ctypes.byref(out), L.workspace())
        _check(rc)
        return out.value

    # ----------------------------------------------------------- training

    def parameters(self):
        """The parameter buffer as one flat float32 tensor sharing lina's memory, with .grad
        the gradient buffer: a torch.optim optimizer over [model.parameters()] updates the
        model in place."""
        n = self.num_params
        p = torch.frombuffer((ctypes.c_float * n).from_address(_lib.lina_model_params(self._m)),
                             dtype=torch.float32)
        g = torch.frombuffer((ctypes.c_float * n).from_address(_lib.lina_model_grads(self._m)),
                             dtype=torch.float32)
        p.grad = g
        return p

    def named_parameters(self):
        """{FLA state-dict name: tensor view into the parameter buffer}."""
        flat = self.parameters()
        out = {}
        for name, (shape, off) in self.tensors.items():
            n = 1
            for s in shape:
                n *= s
            out[name] = flat[off:off + n].view(shape)
        return out

    def zero_grad(self):
        _lib.lina_model_zero_grad(self._m)

    def train_step(self, input_ids, labels=None):
        """Forward and backward on one batch (labels as in loss()): the gradients are ADDED to
        the gradient buffer (parameters().grad); returns the loss."""
        tok, tgt = self._pairs(input_ids, labels)
        out = ctypes.c_double()
        with L.threads_scope():
            rc = _lib.lina_model_train_step(self._m, tok.data_ptr(), tgt.data_ptr(), tok.shape[0],
                                            tok.shape[1], ctypes.byref(out), L.workspace())
        _check(rc)
        return out.value

    # --------------------------------------------------------- generation

    def generate(self, prompt_ids, max_new_tokens=100, temperature=0.8, top_k=40, top_p=0.95,
                 seed=1, eos_token_id=None):
        """Sample up to max_new_tokens tokens after prompt_ids (a list or a 1-D tensor; one
        sequence). The prompt is prefilled in the chunk form, then each token is decoded in
        the recurrent form with the state kept in C (constant memory for linear layers).
        temperature 0 is greedy; top_k 0 and top_p 1 switch those cuts off; the same seed
        gives the same tokens as `lina generate --seed` with the same settings (whose
        defaults these are). Stops early at eos_token_id (not returned; None: the
        checkpoint's eos_token_id, -1: never). Returns the new token ids as a list."""
        ids = _ids("prompt_ids", prompt_ids, self.vocab_size, ndim=1)
        _in_vocab("prompt_ids", ids, self.vocab_size)
        if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
        if not (0 <= float(temperature) <= 100):
            raise ValueError(f"temperature must be in [0, 100], got {temperature}")
        if not isinstance(top_k, int) or top_k < 0:
            raise ValueError(f"top_k must be an int >= 0, got {top_k!r}")
        if not (0 < float(top_p) <= 1):
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {seed!r}")
        if eos_token_id is None:
            eos_token_id = self._config_eos()
        if max_new_tokens == 0:
            return []
        n = ids.shape[0]
        st, smp = vp(), vp()
        _check(_lib.lina_model_state_create(self._m, 1, n + max_new_tokens + 1, ctypes.byref(st)))
        try:
            _check(_lib.lina_sampler_create(self.vocab_size, float(temperature), top_k, float(top_p),
                                            seed, ctypes.byref(smp)))
            out = (ctypes.c_int32 * max_new_tokens)()
            n_out = ctypes.c_int()
            with L.threads_scope():
                rc = _lib.lina_generate(self._m, st, ids.data_ptr(), n, max_new_tokens, int(eos_token_id),
                                        smp, None, None, ctypes.cast(out, vp), ctypes.byref(n_out))
            _check(rc)
            return list(out[:n_out.value])
        finally:
            _lib.lina_model_state_free(st)
            if smp:
                _lib.lina_sampler_free(smp)

    def _config_eos(self):
        import json
        try:
            with open(os.path.join(self.directory, "config.json")) as f:
                e = json.load(f).get("eos_token_id")
        except (OSError, ValueError):
            e = None
        return e if isinstance(e, int) and 0 <= e < self.vocab_size else -1


class Tokenizer:
    """A BPE tokenizer from a Hugging Face tokenizer.json (lina's byte-level ones and
    SentencePiece-style files with byte fallback). Texts are str (UTF-8) or bytes."""

    def __init__(self, handle, path):
        self._t = handle
        self._free = _lib.lina_tokenizer_free
        self.path = path
        self.vocab_size = _lib.lina_tokenizer_vocab_size(handle)

    @classmethod
    def load(cls, path):
        """Load tokenizer.json: a file, or a directory holding it (a checkpoint, or a run
        directory's checkpoint/)."""
        path = os.fspath(path)
        if os.path.isdir(path):
            path = os.path.join(_checkpoint_dir(path, "Tokenizer.load"), "tokenizer.json")
        if not os.path.exists(path):
            raise FileNotFoundError(f"lina: Tokenizer.load: {path} does not exist")
        h = vp()
        _check(_lib.lina_tokenizer_load(os.fsencode(path), ctypes.byref(h)), ValueError)
        return cls(h, path)

    def __del__(self):
        if getattr(self, "_t", None):
            self._free(self._t)
            self._t = None

    def __repr__(self):
        return f"lina.Tokenizer({self.path!r}, {self.vocab_size} tokens)"

    def encode(self, text):
        """Token ids (list of int) of text (str or bytes)."""
        if isinstance(text, str):
            text = text.encode("utf-8")
        if not isinstance(text, (bytes, bytearray)):
            raise TypeError(f"text must be str or bytes, not {type(text).__name__}")
        ids, n = i32p(), ctypes.c_size_t()
        _check(_lib.lina_tokenizer_encode(self._t, bytes(text), len(text), ctypes.byref(ids), ctypes.byref(n)))
        try:
            return ids[:n.value]
        finally:
            _libc.free(ctypes.cast(ids, vp))

    def decode_bytes(self, ids):
        """The bytes of ids (a list of ints or an integer tensor)."""
        if isinstance(ids, torch.Tensor):
            if ids.is_floating_point():
                raise TypeError(f"ids must hold integer token ids, not {ids.dtype}")
            t = ids.reshape(-1).to(torch.int32).contiguous()
        else:
            ids = list(ids)
            if not all(isinstance(i, int) for i in ids):
                raise TypeError("ids must be a list of ints")
            if any(i < -2**31 or i >= 2**31 for i in ids):
                raise ValueError("ids holds a value outside int32")
            t = torch.tensor(ids, dtype=torch.int32)
        buf, n = vp(), ctypes.c_size_t()
        _check(_lib.lina_tokenizer_decode(self._t, t.data_ptr() if t.numel() else None, t.numel(),
                                          ctypes.byref(buf), ctypes.byref(n)))
        try:
            return ctypes.string_at(buf, n.value)
        finally:
            _libc.free(buf)

    def decode(self, ids):
        """The text of ids (str; bytes that are not UTF-8 become U+FFFD)."""
        return self.decode_bytes(ids).decode("utf-8", "replace")

    def token_id(self, piece):
        """Id of a token given as its tokenizer.json string (e.g. "<|endoftext|>"), or -1."""
        return _lib.lina_tokenizer_token_id(self._t, piece.encode("utf-8"))
