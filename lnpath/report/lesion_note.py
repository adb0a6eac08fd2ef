"""One plain sentence, beside the lesion calls, on who made them and how far to trust them.

A trained model's calls are shown with the model's name and its cross-validated figures (from the
``validation`` its entry in ``result.json`` carries). The default morphometry rules carry a
standing caution: their global-sclerosis call is specific but insensitive on other labs' PAS
images (:mod:`lnpath.analysis.lesions`), so a "no" from it is not a reviewed negative. Once the
report is signed, the calls are the pathologist's, and the sentence says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lnpath.core.vocabulary import LESION_LABELS

DEFAULT_RULES = "MorphometryCaller"
DEFAULT_RULES_NOTE = (
    "Lesion calls: lnpath's default morphometry rules, fixed beforehand and not fitted to this "
    "lab. Their global-sclerosis call is specific but insensitive (sensitivity 0.33, κ 0.29 on "
    "held-out public PAS crops), so its negative calls are unreviewed: a 'no' needs the "
    "pathologist's own look."
)


SIGNED_RULES_NOTE = (
    "Lesion calls: made by lnpath's default morphometry rules (fixed beforehand, not fitted "
    "to this lab; their global-sclerosis call is specific but insensitive: sensitivity 0.33, κ "
    "0.29 on held-out public PAS crops) and confirmed by the pathologist at sign-out."
)

SIGNED_SUFFIX = " Its calls were confirmed by the pathologist at sign-out."


def _figure(m: Mapping[str, Any], key: str, label: str) -> str | None:
    value = m.get(key)
    if value is None:
        return None
    ci = m.get(f"{key}_ci")
    return f"{label} {value:.2f}" + (f" ({ci[0]:.2f}–{ci[1]:.2f})" if ci else "")


def _lesion_text(name: str, m: Mapping[str, Any]) -> str:
    parts = [
        _figure(m, "kappa", "κ"),
        _figure(m, "sensitivity", "sensitivity"),
        _figure(m, "specificity", "specificity"),
        _figure(m, "auc", "AUC"),
    ]
    counts = f"{m.get('positives')} positive of {m.get('n')} glomeruli"
    label = LESION_LABELS.get(name, name)
    return f"{label}: " + ", ".join(p for p in parts if p) + f" [{counts}]"


def lesion_calls_note(result: Mapping[str, Any]) -> str | None:
    """The sentence for the lesion caller recorded in ``result["models"]`` (None if unknown)."""
    models = result.get("models") or []
    caller = models[-1] if len(models) > 1 else None
    if caller is None:
        return None
    signed = result.get("status") == "confirmed"  # the calls are the pathologist's now
    if caller.get("name") == DEFAULT_RULES:
        return SIGNED_RULES_NOTE if signed else DEFAULT_RULES_NOTE
    validation = caller.get("validation") or {}
    sha = caller.get("sha256") or ""
    head = f"Lesion calls by model {caller.get('name')} (sha256 {sha[:12]})"
    lesions = validation.get("lesions") or {}
    if not lesions:
        text = head + ": its card records no validation figures; treat its calls as unvalidated."
        return text + (SIGNED_SUFFIX if signed else "")
    biopsies = validation.get("biopsies")
    learned = f" from {biopsies} confirmed biopsies" if biopsies else ""
    text = (
        f"{head}, cross-validated{learned} with folds grouped by {validation.get('grouped_by')} "
        "(95 % intervals): " + "; ".join(_lesion_text(n, m) for n, m in lesions.items()) + "."
    )
    refused = validation.get("refused") or {}
    if refused:
        names = ", ".join(LESION_LABELS.get(n, n) for n in refused)
        text += f" Not called (too few labels to learn): {names}."
    return text + (SIGNED_SUFFIX if signed else "")
