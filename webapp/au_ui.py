"""Action units in the UI: the Photo tab's option and its bar chart per face, and the Video tab's AU lines.

Kept apart from `ui` and `video_ui` so the tabs stay small; the values are the REST answer's (`action_units` per
face, `au_<n>` per video row), drawn with the caveats of docs/action_units.md (`render.AU_CAVEATS`).
"""
from __future__ import annotations

import gradio as gr
import pandas as pd

from emotion.action_units import AU_TABLE

from . import render

MAX_CHARTS = 12  # per-face charts drawn, as for the emotions; the JSON always has every face
PLOT_AUS = 3  # each face's strongest action units (mean over its track) drawn on the video timeline


def action_units_box() -> gr.Checkbox:
    """The Photo tab's "Action units" option (REST's and gradio_client's `action_units`)."""
    return gr.Checkbox(False, label="Action units", elem_id="action-units",
                       info="Also how each face moves (FACS action units from face landmarks; slower)")


def action_unit_charts(result: gr.JSON) -> None:
    """One bar chart of action units per face that has them, and the caveats, redrawn whenever `result` changes.
    AUs this model cannot show are grey (render.AU_CAVEATS)."""

    @gr.render(inputs=result)
    def _charts(value):
        faces = [(i, f) for i, f in enumerate((value or {}).get("faces") or [], 1) if "action_units" in f]
        if not faces:
            return
        colours = {"measured": "#1e88e5", **{note: "#bdbdbd" for note in render.AU_CAVEATS.values()}}
        with gr.Row():
            for i, face in faces[:MAX_CHARTS]:
                table = render.au_table(face)
                if table is None:
                    gr.Markdown(f"**Face {i}**: no action units ({face.get('action_units_reason')})")
                    continue
                gr.BarPlot(table, x="au", y="intensity", color="reading", color_map=colours, y_lim=[0, 1],
                           sort=list(table.au), x_title="action unit", y_title="intensity", tooltip="all",
                           label=f"Face {i}: action units", min_width=320, elem_classes=["au-chart"])
        gr.Markdown(render.AU_NOTE, elem_classes=["au-note"])


def video_option() -> gr.Checkbox:
    """The Video tab's "Action units" option (REST's and gradio_client's `action_units` on predict_video)."""
    return gr.Checkbox(False, label="Action units", elem_id="video-action-units",
                       info="Also each face's strongest action units on the timeline and au_ columns in the CSV "
                            "(slower)")


def timeline_lines(table: pd.DataFrame, track: int, rows: pd.DataFrame) -> list[pd.DataFrame]:
    """The timeline's lines for one face's action units: its PLOT_AUS strongest on average (leaving out the AUs
    this model cannot show), in gr.LinePlot's long format (time_s, probability, face "Face 2: AU12")."""
    columns = {f"au_{au[2:]}": au for au in AU_TABLE if au not in render.AU_CAVEATS}
    present = [c for c in columns if c in table.columns]
    if not present:
        return []
    means = table.loc[table.track == track, present].mean().dropna()
    return [pd.DataFrame({"time_s": rows.time_s, "probability": rows[c], "face": f"Face {track}: {columns[c]}"})
            for c in means.sort_values(ascending=False).index[:PLOT_AUS]]
