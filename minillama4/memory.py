"""How much memory a device has, and refusing an allocation that can never fit before it is tried.

Building a model or a KV cache reserves everything at once. A typo in a config (a vocabulary of 10^12, a request
for 10^8 new tokens) would otherwise ask torch for terabytes and fail deep inside it, or push the machine into swap.
`ensure_fits` compares the bytes with the device's total memory (the host's RAM for the CPU and Apple GPUs, the
GPU's own memory for CUDA) and raises a ValueError giving both in GB. It is a bound, not a promise: an allocation
that passes can still fail next to everything else already in memory.
"""

from __future__ import annotations

import os

import torch


def device_memory(device: str | torch.device) -> int | None:
    """Total bytes of memory of `device`; None where it is unknown or nothing is allocated (the meta device)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    if device.type in ("cpu", "mps"):  # an Apple GPU shares the host's memory
        try:
            return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):  # no sysconf (Windows)
            return None
    return None


def ensure_fits(nbytes: int, device: str | torch.device, what: str, hint: str = "") -> None:
    """Raise ValueError if `what` (nbytes) is larger than all of `device`'s memory."""
    total = device_memory(device)
    if total is not None and nbytes > total:
        raise ValueError(f"{what} needs {nbytes / 1e9:,.1f} GB, more than the {torch.device(device).type} device's "
                         f"{total / 1e9:,.1f} GB of memory{'; ' + hint if hint else ''}")
