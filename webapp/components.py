"""Gradio components whose uploads are decoded by the project's loader (size-checked from the header) and nothing else.

gr.ImageEditor decodes its background, layers and composite with a bare `PIL.Image.open` before our handler runs,
and keeps every blob the browser posts to it (`accept_blobs`) in a dict that only a later event empties. Here
each image goes through `emotion.images` (40 MP limit before decoding, file references checked by `files`), and at
most MAX_PENDING_EDITS uploads wait for their event.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any

import gradio as gr
from PIL import Image

from emotion import EmotionError
from emotion.images import load_alpha, load_image

from .files import read_upload
from .service import check_upload_size

MAX_PENDING_EDITS = 32


class BoundedDict(OrderedDict):
    """A dict that forgets its oldest entries beyond `limit` (abandoned editor uploads)."""

    def __init__(self, limit: int):
        super().__init__()
        self.limit = limit

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, value)
        self.move_to_end(key)
        while len(self) > self.limit:
            self.popitem(last=False)


class SafeImageEditor(gr.ImageEditor):
    """gr.ImageEditor(type="pil") whose preprocess yields RGB background/composite and "L" alpha masks as layers.

    Errors are our EmotionErrors (4xx words), which `ui.ui_errors` shows; the handler gets
    {"background": RGB image, "layers": [alpha masks of the layers that have one], "composite": RGB image}.
    """

    is_template = True  # Gradio's mark for a subclass: the page renders it with gr.ImageEditor's frontend

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, type="pil", **kwargs)
        self.blob_storage = BoundedDict(MAX_PENDING_EDITS)

    def preprocess(self, payload: Any) -> Any:
        try:
            return super().preprocess(payload)
        except EmotionError as e:  # Gradio would wrap it in a message with the payload (and its paths)
            raise gr.Error(str(e), title="Cannot analyse this", print_exception=False) from None

    def convert_and_format_image(self, file: Any, flatten_on_white: bool = False) -> Image.Image | None:
        if file is None:
            return None
        if isinstance(file, (bytes, bytearray, memoryview)):
            check_upload_size(len(file))
            data = bytes(file)
        else:
            data = read_upload(getattr(file, "path", None))
        if flatten_on_white:  # background and composite: the photo, transparency on white
            return load_image(data)
        return load_alpha(data)  # a brush layer: only where it is painted matters (None: Gradio drops it)
