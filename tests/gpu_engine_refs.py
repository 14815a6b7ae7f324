"""What the diffusion engines' tests share: nine distinct reference images and torch on one thread."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from videosynth.engines.base import ReferenceImage

COLOURS = [(220, 40, 40), (40, 200, 60), (40, 60, 220), (230, 200, 30), (200, 40, 200), (30, 200, 200),
           (120, 60, 20), (250, 250, 250), (10, 10, 10)]  # fmt: skip


def coloured_references(folder: Path) -> list[ReferenceImage]:
    """One small flat-coloured PNG per colour, each a different width, as ``[Image 1]`` to ``[Image 9]``."""
    from PIL import Image

    refs = []
    for i, colour in enumerate(COLOURS, 1):
        path = folder / f"ref{i}.png"
        Image.new("RGB", (60 + 10 * i, 50), colour).save(path)
        refs.append(ReferenceImage(index=i, path=path, width=60 + 10 * i, height=50, format="PNG"))
    return refs


def one_torch_thread() -> Iterator[None]:
    """For a module-scoped fixture: the brief's one torch thread while the module runs, then as before."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
