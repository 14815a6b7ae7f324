"""The real wan-vace engine with one fault injected into torch: a CUDA out-of-memory in the first task.

Named in a models file as ``wan_faults:OutOfMemoryOnce`` (a plugin engine), so the fault happens inside
the engine process of a real ``videosynth serve``. The error is torch's own class, raised from inside
the real pipeline's denoising loop where CUDA's allocator raises it.
"""

from __future__ import annotations

from typing import Any

import torch

from videosynth.engines.wan_vace.engine import WanVaceEngine
from videosynth.engines.wan_vace.options import OPTIONS as WAN_VACE_OPTIONS


class OutOfMemoryOnce(WanVaceEngine):
    OPTIONS = WAN_VACE_OPTIONS

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._armed = False
        self._forwards = 0
        self.pipe.transformer.register_forward_pre_hook(self._exhaust, with_kwargs=True)

    def warm_up(self) -> None:
        super().warm_up()
        self._armed = True

    def _exhaust(self, module: Any, args: Any, kwargs: Any) -> None:
        if not self._armed:
            return
        self._forwards += 1
        if self._forwards == 3:  # the second step of the first task
            self._armed = False
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
