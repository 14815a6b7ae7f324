"""A Qwen3-VL processor for hosts without torchvision (CPU-only CI, a CPU build of torch).

transformers 5 cannot build ``Qwen3VLProcessor`` without torchvision: its ``video_processor`` is a
``Qwen3VLVideoProcessor``, which needs it. The engine only ever sends images, so this processor leaves the
video processor out; a GPU host with torchvision loads the stock class.
"""

from __future__ import annotations

from typing import Any

from transformers import Qwen3VLProcessor


class ImageOnlyQwen3VLProcessor(Qwen3VLProcessor):
    """``Qwen3VLProcessor`` for images and text only: no video references, no torchvision."""

    # ProcessorMixin derives the sub-processors it builds and saves from the signature of __init__, so
    # leaving ``video_processor`` out of it is all it takes.
    def __init__(
        self, image_processor: Any = None, tokenizer: Any = None, chat_template: Any = None, **kwargs: Any
    ) -> None:
        super().__init__(  # type: ignore[no-untyped-call]
            image_processor=image_processor,
            tokenizer=tokenizer,
            video_processor=None,
            chat_template=chat_template,
            **kwargs,
        )
