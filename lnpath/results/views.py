"""The Jupyter view and the plot of a :class:`~lnpath.results.folder.SlideResult`.

Self-contained: the overlay is inlined as a ``data:`` URI and the report is named, not linked
(``file://`` links are dead in a JupyterLab served from another machine).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from PIL import Image

from lnpath.core import views
from lnpath.report.slide import diagnosis_line, status_text
from lnpath.report.words import final_class
from lnpath.scoring.views import score_body
from lnpath.wsi.pictures import img

if TYPE_CHECKING:
    from lnpath.results.folder import SlideResult

OVERLAY_PX = 900
"""Width of the inline overlay: the numbered glomeruli stay readable."""


def _facts(result: SlideResult) -> str:
    data = result.data
    slide = data.get("slide") or {}
    parts = [
        f"{status_text(data)} · revision {result.revision}",
        f"slide {slide.get('name')}",
        f"{slide.get('mpp', 0):.4g} µm/px ({slide.get('mpp_source')})",
        f"stain {data.get('stain')}",
    ]
    if data.get("patient_id"):
        parts.append(f"patient {data['patient_id']}")
    if data.get("biopsy_date"):
        parts.append(f"biopsy {data['biopsy_date']}")
    return " · ".join(parts)


def result_html(result: SlideResult) -> str:
    """Diagnosis line, status, overlay, class, component tables, what is not assessed."""
    parts = [views.para(diagnosis_line(result.data), bold=True), views.para(_facts(result))]
    overlay = result.folder / "overlay.png"
    if overlay.is_file():
        with Image.open(overlay) as picture:
            parts.append(img(picture, "overlay: numbered glomeruli by main call", OVERLAY_PX))
    parts.append(score_body(result.score, final_class(result.data)[0]))
    for warning in result.data.get("warnings") or []:
        parts.append(views.para(f"Warning: {warning}"))
    parts.append(views.para(f"Full report: {result.report_path.name} in {result.folder}"))
    return views.block(*parts)


def plot_result(result: SlideResult) -> Any:
    """The overlay above the points of every index component.

    Returns:
        The matplotlib Figure.
    """
    plt = views.pyplot()
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(10.0, 8.0), gridspec_kw={"height_ratios": [1, 1.4]}
    )
    overlay = result.folder / "overlay.png"
    if overlay.is_file():
        with Image.open(overlay) as picture:
            top.imshow(picture.convert("RGB"))
    top.set_title(diagnosis_line(result.data), fontsize=8, wrap=True)
    top.set_axis_off()
    result.score.plot(ax=bottom)
    fig.tight_layout()
    return fig
