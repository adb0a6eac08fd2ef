"""rich, imported on first use: building the parser (every ``--help``) need not pay its ~80 ms."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table


def new_console(**options: Any) -> Console:
    """A ``rich.console.Console`` with these options."""
    from rich.console import Console

    return Console(**options)


def new_table(**options: Any) -> Table:
    """A ``rich.table.Table`` with these options."""
    from rich.table import Table

    return Table(**options)


def escape(text: str) -> str:
    """``text`` with rich markup brackets escaped, so file names print as written."""
    from rich.markup import escape as escape_markup

    return escape_markup(text)
