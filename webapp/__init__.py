"""The web app around the `emotion` inference core: model registry, REST routes, Gradio UI and drawing.

`app.py` wires these together; nothing here detects faces or runs a model itself.
"""
