"""Small HTML and matplotlib helpers for the Jupyter views and plots of lnpath's objects.

Every text that reaches HTML is escaped here. Pictures (``lnpath.wsi.pictures``) are inline
``data:`` URIs, never ``file://`` links, which a JupyterLab served from another machine cannot open.
matplotlib is imported only when something is plotted.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape
from typing import Any

from .errors import InputError

STYLE = "font-family:sans-serif;font-size:13px;line-height:1.4"
_TABLE = "border-collapse:collapse;margin:4px 0 8px 0"
_CELL = "border:1px solid #ccc;padding:2px 6px;text-align:left"


def css_text(text: str) -> str:
    """``text`` for inside a double-quoted CSS string (a printed page's footer): every character
    but ASCII letters, digits and spaces as a hex escape (its closing space is part of it), so a
    slide or pathologist name can neither close the string nor the ``<style>`` element, and HTML
    escaping leaves it as it is."""
    return "".join(
        c if c.isascii() and (c.isalnum() or c == " ") else f"\\{ord(c):x} " for c in text
    )


def table(header: Sequence[str], rows: Iterable[Sequence[Any]], caption: str = "") -> str:
    """An escaped HTML table; ``None`` cells read as an en dash."""
    head = "".join(f'<th style="{_CELL}">{escape(str(h))}</th>' for h in header)
    body = "".join(
        "<tr>" + "".join(f'<td style="{_CELL}">{_cell(v)}</td>' for v in row) + "</tr>"
        for row in rows
    )
    cap = f'<caption style="text-align:left"><b>{escape(caption)}</b></caption>' if caption else ""
    return f'<table style="{_TABLE}">{cap}<tr>{head}</tr>{body}</table>'


def block(*parts: str) -> str:
    """Wrap already-escaped parts in one styled ``<div>``."""
    return f'<div style="{STYLE}">' + "".join(parts) + "</div>"


def para(text: str, bold: bool = False) -> str:
    """An escaped paragraph."""
    inner = f"<b>{escape(text)}</b>" if bold else escape(text)
    return f'<p style="margin:4px 0">{inner}</p>'


def pyplot() -> Any:
    """``matplotlib.pyplot``, or a one-line error naming the extra that installs it."""
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        raise InputError(
            "plotting needs matplotlib: pip install 'lnpath[notebooks]' (or matplotlib)"
        ) from None
    return plt


def axes(ax: Any = None, figsize: tuple[float, float] = (8.0, 4.0)) -> Any:
    """``ax``, or the axes of a new figure."""
    if ax is not None:
        return ax
    _, new = pyplot().subplots(figsize=figsize)
    return new


def _cell(value: Any) -> str:
    return "–" if value is None else escape(str(value))
