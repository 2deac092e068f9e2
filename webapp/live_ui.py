"""The Live webcam tab's two modes: "On this device" (the /live page in a frame: the browser reads the camera itself,
nothing is sent) and "On the server" (the tab's webcam stream, each frame analysed here).

The device mode is the default wherever the browser has WebAssembly and a camera API (checked in the page on load);
the frame is created only when the tab is opened, so visitors of the other tabs load none of its ~9 MB (small_cnn).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import gradio as gr

MODES = [("On this device", "device"), ("On the server", "server")]
# Relative to the Gradio page, so that it works behind a proxy prefix too; "camera": the frame may ask for it.
FRAME = ('<iframe src="live" allow="camera" title="Live webcam on this device" '
         'style="width:100%;height:min(80vh,720px);border:0"></iframe>')
CAN_RUN = ("() => (typeof WebAssembly === 'object' && !!navigator.mediaDevices && "
           "!!navigator.mediaDevices.getUserMedia && window.isSecureContext) ? 'device' : 'server'")
DEVICE_NOTE = ("**On this device**: face detection and the model run in your browser. The video, the face crops "
               "and the results never leave it; the model's files are downloaded once.")
SERVER_NOTE = ("**On the server**: each frame is sent to this server and analysed there, as soon as the previous "
               "one is done; frames that arrive meanwhile are dropped, so the overlay stays current.")


@contextmanager
def live_modes(demo: gr.Blocks, tab: gr.Tab) -> Iterator[None]:
    """Inside the Live webcam tab: the mode switch and the device mode's frame; the `with` body (the server mode's
    components) is shown when "On the server" is chosen."""
    mode = gr.Radio(MODES, value="device", show_label=False, elem_id="live-mode", container=False)
    with gr.Column(visible=True) as device:
        gr.Markdown(DEVICE_NOTE)
        frame = gr.HTML("", elem_id="live-frame")
    with gr.Column(visible=False) as server:
        gr.Markdown(SERVER_NOTE)
        yield

    def show_mode(chosen: str):
        on_device = chosen == "device"
        return gr.Column(visible=on_device), gr.Column(visible=not on_device), FRAME if on_device else ""

    mode.change(show_mode, mode, [device, server, frame], queue=False, api_visibility="private",
                show_progress="hidden")
    # In the browser only (no request): the default mode, and the frame once the tab is opened.
    demo.load(None, None, mode, js=CAN_RUN)
    tab.select(None, mode, frame, js=f"(mode) => mode === 'device' ? {FRAME!r} : ''")
