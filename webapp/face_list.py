"""The faces of a result for people: the 8 bars of one face, and for a group photo a compact table and a picker.

One full chart per face made a 20-face photo a long scroll; now each face is a short row (number as on the photo,
emotion, confidence, runner-up) and the bars are drawn for the face picked in the menu or clicked in the table.
The handlers only draw the JSON the predict step returned (no model, no file), so they run outside the pool.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Any

import gradio as gr

from . import render

log = logging.getLogger(__name__)

NOT_A_RESULT = "this is not a result the predict step returned: run the prediction again"


@contextlib.contextmanager
def _drawing():
    """Event data comes from the client: a malformed result is one message, never a trace."""
    try:
        yield
    except (KeyError, TypeError, ValueError, AttributeError, IndexError):
        log.info("face list: malformed result", exc_info=True)
        raise gr.Error(NOT_A_RESULT, print_exception=False) from None


def face_details(result: gr.JSON) -> None:
    """The table, picker and bars for `result`, redrawn whenever it changes (in the Blocks being built)."""
    table = gr.Dataframe(headers=render.FACE_TABLE_HEADERS, visible=False, interactive=False, show_label=False,
                         max_height=330, elem_classes=["face-table"])
    pick = gr.Dropdown(label="Bars for", visible=False, interactive=True, elem_classes=["face-pick"])
    bars = gr.Label(num_top_classes=8, visible=False, min_width=220, elem_classes=["face-chart"])
    # preprocess=False: the menu's choices change per result, and the handlers check the number themselves.
    quick = {"api_visibility": "private", "concurrency_limit": None, "show_progress": "hidden", "preprocess": False}
    result.change(list_faces, result, [table, pick, bars], **quick)
    pick.input(face_bars, [result, pick], bars, **quick)
    table.select(pick_table_row, result, [pick, bars], **quick)


def _faces(result: Any) -> list[dict]:
    faces = result.get("faces") if isinstance(result, dict) else None
    return faces if isinstance(faces, list) else []


def _choices(faces: list[dict]) -> list[tuple[str, int]]:
    return [(render.face_title(n, face), n) for n, face in enumerate(faces, 1)]


def list_faces(result):
    """A new result: the table and picker for two faces or more (hidden for one), and the first face's bars."""
    with _drawing():
        faces = _faces(result)
        group = len(faces) > 1
        return (gr.Dataframe(value=render.face_rows(faces) if group else None, visible=group),
                gr.Dropdown(choices=_choices(faces) if group else [], value=1 if group else None, visible=group),
                face_bars(result, 1))


def face_bars(result, number):
    """The bars of face `number` (from 1, as on the photo); hidden when there is no such face."""
    with _drawing():
        faces = _faces(result)
        if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= len(faces):
            return gr.Label(value=None, visible=False)
        face = faces[number - 1]
        return gr.Label(value=face["probabilities"], label=render.face_title(number, face), visible=True)


def pick_table_row(result, evt: gr.SelectData):
    """A click on a table row picks that face: the picker shows it and the bars are its bars."""
    index = evt.index if isinstance(evt.index, (list, tuple)) else [None]
    number = index[0] + 1 if isinstance(index[0], int) else None
    with _drawing():
        choices = _choices(_faces(result))
    shown = number if any(n == number for _, n in choices) else None
    return gr.Dropdown(choices=choices, value=shown), face_bars(result, shown)
