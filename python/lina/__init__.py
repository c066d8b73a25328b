"""lina: exact, fast CPU kernels for linear transformers, as PyTorch ops and models.

    import lina
    from lina.ops import chunk_gla          # flash-linear-attention's names and signatures
    lina.set_num_threads(2)                 # default: torch.get_num_threads()
    model = lina.Model.load("runs/gla-small")   # FLA checkpoint: config.json + model.safetensors
    tok = lina.Tokenizer.load("runs/gla-small")
    print(tok.decode(model.generate(tok.encode("In the beginning"), 50, seed=1)))

The package loads liblina.so: the copy installed next to it (`make python`,
`pip install ./python`), else the file named by LINA_LIBRARY, else build/liblina.so of
the repository it sits in.
"""

from ._lib import LinaError, get_num_threads, set_num_threads
from ._lib import path as library_path
from ._lib import lib as _clib

__version__ = "0.1.0"


def empty_cache():
    """Releases the idle buffers lina.ops keeps for reuse (what a forward keeps for its
    backward: chunk states, the delta rule's chunk cache; they return to the pool when
    their autograd graph is freed)."""
    from ._core import pool
    pool.clear()


def isa():
    """The instruction-set path lina's kernels run on ("avx512", "avx2" or "portable")."""
    return _clib.lina_isa_name().decode()


from . import ops  # noqa: E402
from .models import Model, Tokenizer  # noqa: E402

__all__ = ["ops", "Model", "Tokenizer", "set_num_threads", "get_num_threads", "isa", "LinaError",
           "library_path", "empty_cache"]
