"""The inductive, edge-aware GATv2 persona encoder: model, losses, sampled training, inference."""

import os

# DGL asks for a backend on first import unless told; the whole stack is PyTorch. Every module of
# this package imports dgl, and this package initialiser runs before any of them.
os.environ.setdefault("DGLBACKEND", "pytorch")
