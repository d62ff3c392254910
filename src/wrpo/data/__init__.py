"""Training data: quadruple records, their tokenisation and the collator, and the pipeline's data construction.

The names below are imported when first used (PEP 562): the dataset and tokenizer modules import torch,
which the command line must not pay for when it only reads a settings class of this package."""

import importlib

_EXPORTS = {
    "QuadrupleCollator": "dataset", "QuadrupleDataset": "dataset", "load_quadruple_dataset": "dataset",
    "InMemoryRows": "records", "Quadruple": "records", "iter_quadruples": "records", "parse_quadruple": "records",
    "read_rows": "records", "row_sources": "records",
    "EncodedQuadruple": "tokenize", "QuadrupleEncoder": "tokenize", "TruncationReport": "tokenize",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"wrpo.data.{_EXPORTS[name]}"), name)
