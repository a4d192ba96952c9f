"""Fail-early check of the device a stage is asked to run on, before it loads any data.

It owns one question: can this process run on `device` (torch sees the GPU; for graph stages, the
installed DGL was built with CUDA)? It answers with one message that names everything missing and
the command that fixes it. It never picks a device or falls back to the CPU on its own.
"""

from __future__ import annotations

import os

SETUP_GPU_COMMAND = "make setup-gpu"
FIX_NO_GPU = (f"run on a machine with an NVIDIA GPU and its driver, set up there with `{SETUP_GPU_COMMAND}` "
              "(README, 'Running on a GPU machine'), or set device: cpu")
FIX_DGL = f"install DGL's CUDA build into .venv with `{SETUP_GPU_COMMAND}`"


class DeviceUnavailable(RuntimeError):
    """The requested device cannot be used in this environment; the message says why and how to fix it."""


def dgl_has_cuda() -> bool:
    """Whether the installed DGL was built with CUDA.

    libdgl registers the `device_api.cuda` factory only in CUDA builds (the registry's 2.1.0 wheel
    has none), so this asks the build itself and needs no GPU."""
    import dgl  # noqa: F401  (loads libdgl and its function registry)
    from dgl._ffi.function import get_global_func

    return get_global_func("device_api.cuda", allow_missing=True) is not None


def _no_gpu_reason(torch) -> str:
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU-only build"
    hidden = os.environ.get("CUDA_VISIBLE_DEVICES")
    visible = f"; CUDA_VISIBLE_DEVICES={hidden!r}" if hidden is not None else ""
    return f"torch {torch.__version__} sees no GPU (no NVIDIA driver or no device{visible})"


def missing_for(device: str, *, needs_dgl: bool) -> list[str]:
    """What this environment lacks to run on `device`, one line each with its fix; empty when it can."""
    import torch

    try:
        parsed = torch.device(device)
    except RuntimeError as error:
        raise ValueError(f"unknown device {device!r}: expected cpu, cuda or cuda:<index> ({error})") from None
    if parsed.type != "cuda":
        return []
    missing = []
    if not torch.cuda.is_available():
        missing.append(f"{_no_gpu_reason(torch)}: {FIX_NO_GPU}")
    elif (parsed.index or 0) >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        missing.append(f"GPU {parsed.index} does not exist: torch sees {count} GPU(s), cuda:0..cuda:{count - 1}; "
                       "pick one of those")
    if needs_dgl and not dgl_has_cuda():
        from importlib.metadata import version

        missing.append(f"the installed DGL {version('dgl')} is a CPU-only build (its libdgl has no CUDA device API): "
                       f"{FIX_DGL}")
    return missing


def require_device(device: str, *, needs_dgl: bool) -> None:
    """Raise DeviceUnavailable, naming every missing piece and its fix, unless `device` can be used.

    `needs_dgl`: the stage runs DGL graphs or samplers on the device (the encoder), not only torch."""
    missing = missing_for(device, needs_dgl=needs_dgl)
    if missing:
        lines = "\n".join(f"- {item}" for item in missing)
        raise DeviceUnavailable(f"device {device!r} requested but CUDA is not available to this stage:\n{lines}")
