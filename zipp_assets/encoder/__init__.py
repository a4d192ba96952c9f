"""The inductive, edge-aware GATv2 persona encoder: model, losses, sampled training, inference."""

import os

# DGL asks for a backend on first import unless told; the whole stack is PyTorch. Every module of
# this package imports dgl, and this package initialiser runs before any of them.
os.environ.setdefault("DGLBACKEND", "pytorch")

import warnings  # noqa: E402

# DGL suggests CPU-affinity tuning on every loader pass; it is advice, not a problem, and floods logs.
warnings.filterwarnings("ignore", message="Dataloader CPU affinity opt is not enabled")
