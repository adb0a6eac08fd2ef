"""Text, HTML and matplotlib views of a :class:`~lnpath.scoring.score.BiopsyScore`.

Pure presentation of what scoring already decided: totals with the range an incomplete index can
still take, every component with its n/N and band, and what was not assessed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lnpath.core import views
from lnpath.scoring.uncertainty import band_pct

if TYPE_CHECKING:
    from lnpath.scoring.indices import Component, IndexScore
    from lnpath.scoring.score import BiopsyScore

_HEADER = ("component", "n/N or %", "band 0–3", "weight", "points", "range if assessed", "basis")


def label(name: str) -> str:
    """A component or lesion name as words (``interstitial_fibrosis`` → interstitial fibrosis)."""
    return name.replace("_", " ")


def index_total(index: IndexScore) -> str:
    """``5/24 (low)``, ``5–17/24 (incomplete)`` or ``not computable``: an incomplete index is
    shown as the range it can still take, never as the partial sum alone (as in the diagnosis
    line), with its §1.7 word where that range has one."""
    if index.total is None:
        return "not computable"
    word = index.band  # spec §1.7: low / moderate / high, where the total (or range) decides it
    if index.complete:
        return f"{index.total}/{index.maximum}" + (f" ({word})" if word else "")
    low, high = index.total_range or (index.total, index.maximum)
    return f"{low}–{high}/{index.maximum} (incomplete{f', {word}' if word else ''})"


def index_title(index: IndexScore) -> str:
    """Which index this is, from its maximum (24: activity, 12: chronicity)."""
    return f"Modified NIH {'activity' if index.maximum == 24 else 'chronicity'} index"


def index_repr(index: IndexScore) -> str:
    """One line: the total (or the range an incomplete index can take) and what is missing."""
    missing = len(index.not_assessed)
    gap = f", {missing} of {len(index.components)} components not assessed" if missing else ""
    kind = "activity" if index.maximum == 24 else "chronicity"
    return f"IndexScore({kind} {index_total(index)}{gap})"


def component_repr(c: Component) -> str:
    """One line: n/N (or the %), the band or "not assessed", the weight."""
    amount = _amount(c) or "no measurement"
    band = f"band {c.score}" if c.assessed and c.score is not None else "not assessed"
    return f"Component({label(c.name)}: {amount}, {band}, ×{c.weight})"


def class_text(score: BiopsyScore) -> str:
    """The class proposal in a few words."""
    proposal = score.isn_rps_class.proposal
    return f"class {proposal}" if proposal else "no class proposed"


def score_repr(score: BiopsyScore) -> str:
    """One line: class, AI, CI, glomeruli, status."""
    return (
        f"BiopsyScore({class_text(score)}, AI {index_total(score.activity_index)}, "
        f"CI {index_total(score.chronicity_index)}, {score.adequacy.n_glomeruli} glomeruli, "
        f"{score.status})"
    )


def _amount(c: Component) -> str | None:
    if c.n is not None and c.N is not None:
        text = f"{c.n}/{c.N}"
        if c.n_not_assessed:
            text += f" ({c.n_not_assessed} not assessed)"
        return text
    if c.fraction is not None:
        return band_pct(c.fraction)
    return None


def _row(name: str, c: Component) -> list[Any]:
    rng = None if c.score_range is None else f"{c.score_range[0]}–{c.score_range[1]}"
    points = None if c.weighted is None else f"{c.weighted}/{3 * c.weight}"
    band = str(c.score) if c.assessed and c.score is not None else "not assessed"
    return [label(name), _amount(c), band, f"×{c.weight}", points, rng, c.basis or None]


def index_table(title: str, index: IndexScore) -> str:
    """One index as an HTML table, its total in the caption."""
    rows = [_row(name, c) for name, c in index.components.items()]
    return views.table(_HEADER, rows, caption=f"{title}: {index_total(index)}")


def score_body(score: BiopsyScore, signed_class: str | None = None) -> str:
    """The HTML parts shared by the score's and a slide result's view (no outer block).

    A confirmed score states its class as signed (``signed_class``: the pathologist's override,
    when there is one), never as a proposal: wording after sign-out says it was signed.
    """
    signed = score.status == "confirmed"
    if signed:
        klass = signed_class or score.isn_rps_class.proposal
        class_line = f"ISN/RPS class (signed): {klass or 'none assigned'}"
    else:
        class_line = f"ISN/RPS: {score.isn_rps_class.label}"
    parts = [
        views.para(class_line, bold=True),
        views.para(f"Adequacy: {score.adequacy.status} — {score.adequacy.message}"),
        index_table(index_title(score.activity_index), score.activity_index),
        index_table(index_title(score.chronicity_index), score.chronicity_index),
    ]
    missing = score.activity_index.not_assessed + score.chronicity_index.not_assessed
    if missing:
        who = "not evaluable at sign-out" if signed else "the pathologist supplies"
        parts.append(views.para(f"Not assessed ({who}): " + ", ".join(map(label, missing))))
    if score.isn_rps_class.needs_if_em:
        parts.append(views.para("Needs IF/EM: " + ", ".join(score.isn_rps_class.needs_if_em)))
    return "".join(parts)


def score_html(score: BiopsyScore) -> str:
    """The Jupyter view: class, adequacy, both component tables, what is not assessed."""
    until = "" if score.status == "confirmed" else " (every value is a proposal until confirmed)"
    status = views.para(f"Status: {score.status}{until}")
    return views.block(score_body(score), status)


def plot_score(score: BiopsyScore, ax: Any = None) -> Any:
    """Points per component against their maximum; a not-assessed one as its possible range.

    Returns:
        The matplotlib Axes.
    """
    ax = views.axes(ax, figsize=(8.0, 4.5))
    names, got, full, possible = [], [], [], []
    for prefix, index in (("AI", score.activity_index), ("CI", score.chronicity_index)):
        for name, c in index.components.items():
            names.append(f"{prefix} · {label(name)}")
            got.append(c.weighted or 0)
            full.append(3 * c.weight)
            high = c.score_range[1] * c.weight if c.score_range and not c.assessed else 0
            possible.append(high)
    rows = range(len(names))
    ax.barh(rows, full, color="#eeeeee", label="maximum")
    ax.barh(rows, possible, color="none", edgecolor="#d08000", hatch="//", label="could be")
    ax.barh(rows, got, color="#2c7fb8", label="scored")
    ax.set_yticks(list(rows), names)
    ax.invert_yaxis()
    ax.set_xlabel("points")
    ax.set_title(
        f"AI {index_total(score.activity_index)} · CI {index_total(score.chronicity_index)}"
    )
    ax.legend(loc="lower right", fontsize=8)
    ax.figure.tight_layout()
    return ax
