"""Host arrays onto the training device, as rollouts need them: on the CPU
the same memory, on a GPU an asynchronous copy from page-locked memory.
Which device a run trains on is :func:`pufferrs.config.resolve_device`."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from pufferrs.errors import PufferError

__all__ = ["HostToDevice"]


class HostToDevice:
    """Copies host arrays to ``device``. For a GPU, the vector env's shared
    observation rows are page-locked in place (``vecenv.pin_memory()``, no
    staging copy) and other arrays go through pinned staging buffers, so
    every copy is asynchronous. Either source is safe to overwrite at the
    next ``recv``: the actions read back to the host before the next
    ``send`` wait for the copy."""

    def __init__(self, device: torch.device, vecenv: Any):
        self.device = device
        self.pinned = device.type == "cuda"
        #: Whether the vector env's rows are page-locked in place.
        self.rows_pinned = False
        if self.pinned and hasattr(vecenv, "pin_memory"):
            try:
                vecenv.pin_memory()
                self.rows_pinned = True
            except PufferError:
                pass  # e.g. registration refused: staging copies still work
        self._staging: dict[tuple, torch.Tensor] = {}

    def __call__(self, array: np.ndarray, rows: bool = False) -> torch.Tensor:
        """``array`` on the device; ``rows`` says it is the vector env's
        observation rows (page-locked already when ``rows_pinned``)."""
        tensor = torch.from_numpy(array)
        if not self.pinned:
            return tensor.to(self.device)
        if not (rows and self.rows_pinned):
            key = (tensor.dtype, tuple(tensor.shape))
            staging = self._staging.get(key)
            if staging is None:
                staging = self._staging[key] = torch.empty_like(tensor).pin_memory()
            tensor = staging.copy_(tensor)
        return tensor.to(self.device, non_blocking=True)
