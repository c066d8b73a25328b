"""Installs the lina package with the liblina.so that `make python` put beside it.

    make python && pip install ./python     (no network needed: setuptools only)
"""
import glob
import os

from setuptools import setup

here = os.path.dirname(os.path.abspath(__file__))
if not glob.glob(os.path.join(here, "lina", "liblina.so*")):
    raise SystemExit("lina: python/lina/liblina.so is missing; run `make python` in the repository first")

setup(
    name="lina",
    version="0.1.0",
    description="lina's CPU kernels for linear transformers as PyTorch ops, models and a tokenizer",
    packages=["lina"],
    package_data={"lina": ["liblina.so*"]},
    python_requires=">=3.8",
    zip_safe=False,
)
