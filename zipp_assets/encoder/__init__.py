"""The inductive, edge-aware GATv2 persona encoder: model, losses, sampled training, inference."""

import os

# DGL asks for a backend on first import unless told; the whole stack is PyTorch.
os.environ.setdefault("DGLBACKEND", "pytorch")
