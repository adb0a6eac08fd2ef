"""Short text and a matplotlib plot of a :class:`~lnpath.response.endpoint.ResponseResult`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lnpath.core import views

if TYPE_CHECKING:
    from lnpath.response.endpoint import ResponseResult
    from lnpath.response.sides import SideIndex


def endpoint_text(result: ResponseResult) -> str:
    """``composite_histologic_responder = responder`` or ``... not evaluable``."""
    name = result.endpoint.get("name", "endpoint")
    value = result.endpoint.get("value")
    return f"{name} = {value}" if value is not None else f"{name} not evaluable"


def response_repr(result: ResponseResult) -> str:
    """One line: preset, endpoint, status."""
    return f"ResponseResult({result.preset}: {endpoint_text(result)}, status={result.status!r})"


def _range(index: SideIndex) -> tuple[float | None, float, float]:
    """(total or None when incomplete, least and most the full index can be)."""
    low = high = 0
    for c in index.components.values():
        if c.assessed and c.score is not None:
            low, high = low + c.score * c.weight, high + c.score * c.weight
        else:
            lo, hi = c.score_range or (0, 3)
            low, high = low + lo * c.weight, high + hi * c.weight
    total = float(index.total) if index.complete and index.total is not None else None
    return total, float(low), float(high)


def plot_response(result: ResponseResult) -> Any:
    """Baseline and follow-up AI and CI (an incomplete index as the range it can still take)
    and the preset's remission threshold.

    Returns:
        The matplotlib Figure.
    """
    plt = views.pyplot()
    fig, panels = plt.subplots(1, 2, figsize=(9.0, 3.8))
    sides = (("baseline", result.baseline), ("follow-up", result.followup))
    indices = (("activity index", "activity", 24), ("chronicity index", "chronicity", 12))
    for ax, (title, attr, maximum) in zip(panels, indices, strict=True):
        for x, (_, side) in enumerate(sides):
            value, low, high = _range(getattr(side, attr))
            if value is None:  # incomplete: the range the missing components leave open
                ax.vlines(x, low, high, color="#d08000", linewidth=8, alpha=0.5)
                text, y = f"{low:g}–{high:g}", high
            else:
                ax.plot(x, value, "o", color="#2c7fb8", markersize=9)
                text, y = f"{value:g}", value
            ax.annotate(text, (x, y), xytext=(8, 0), textcoords="offset points")
        threshold = result.params.get("remission_max_ai") if attr == "activity" else None
        if threshold is not None:
            ax.axhline(threshold, ls="--", c="grey", label=f"remission: AI ≤ {threshold}")
            ax.legend(fontsize=8, loc="upper right")
        ax.set(xticks=[0, 1], xticklabels=[s[0] for s in sides], xlim=(-0.5, 1.5))
        ax.set(ylim=(-0.5, maximum + 0.5), title=title)
    fig.suptitle(f"{result.preset}: {endpoint_text(result)} ({result.status})", fontsize=10)
    fig.tight_layout()
    return fig
