"""Self-contained HTML report of a baseline vs follow-up comparison.

Rendered from the response.json dict (``ResponseResult.to_dict()``) rather than the live object, so
a saved response.json can be re-rendered later without the inputs. Every value is passed through
:func:`html.escape`: patient ids, paths and class proposals come from files a user controls.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping
from typing import Any

from lnpath.core.svg import svg_uri
from lnpath.core.views import css_text
from lnpath.response.charts import delta_chart
from lnpath.response.rules import rule_text

_STYLE = """
.lnr{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;color:#1d2330;max-width:1100px}
.lnr h1{font-size:1.4em;margin:.2em 0}.lnr h2{font-size:1.1em;margin:1.2em 0 .4em;break-after:avoid}
.lnr table{border-collapse:collapse;margin:.3em 0;font-size:.92em}.lnr tr{break-inside:avoid}
.lnr th,.lnr td{border:1px solid #ccd2dc;padding:3px 8px;text-align:left;vertical-align:top}
.lnr th{background:#eef1f6}.lnr td.num{text-align:right;font-variant-numeric:tabular-nums}
.lnr .badge{display:inline-block;padding:2px 10px;border-radius:10px;font-weight:600}
.lnr .final{background:#d4f2dc}.lnr .provisional{background:#fff1c2}
.lnr .not_evaluable{background:#f8d4d4}
.lnr .pass{color:#17692d}.lnr .fail{color:#a4161a;font-weight:600}.lnr .not_checked{color:#6b7280}
.lnr .warn{background:#fff7e0;border-left:4px solid #e0a800;padding:4px 8px;margin:4px 0}
.lnr .small{color:#555;font-size:.85em}
.lnr img.chart{max-width:100%;border:1px solid #ddd}
"""


def _e(value: Any) -> str:
    """Escape for HTML; None shows as an em dash so a missing value is never an empty cell."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return html.escape(f"{value:.3g}")
    return html.escape(str(value))


def _table(header: Iterable[str], rows: Iterable[Iterable[Any]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{_e(c)}</td>' if isinstance(c, int | float) else f"<td>{_e(c)}</td>"
            for c in row
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _count(c: Mapping[str, Any]) -> str:
    """``n/N`` or a cortex %; a dash when not assessed (its ``n`` of 0 counted nothing)."""
    if c.get("assessed") is False:
        return "—"
    n, total = c.get("n"), c.get("N")
    if n is None or total is None:
        return "—" if c.get("fraction") is None else f"{100 * c['fraction']:.0f}%"
    if isinstance(n, float) and not n.is_integer():
        return f"{100 * c['fraction']:.0f}%" if c.get("fraction") is not None else "—"
    return f"{int(n)}/{int(total)}"


def _components(data: Mapping[str, Any], key: str, title: str) -> str:
    bl, fu = data["baseline"][key], data["followup"][key]
    deltas = (data.get("deltas") or {}).get(key, {}).get("components", {})
    rows = []
    for name, cb in bl["components"].items():
        cf = fu["components"].get(name, {})
        d = deltas.get(name, {})
        rows.append(
            [
                name.replace("_", " "),
                f"×{cb.get('weight')}",
                _count(cb),
                _score(cb, name, data["baseline"]),
                _count(cf),
                _score(cf, name, data["followup"]),
                d.get("delta_weighted"),
            ]
        )
    total_delta = (data.get("deltas") or {}).get(key, {}).get("delta")
    rows.append(
        [
            "TOTAL",
            "",
            "",
            _total(bl),
            "",
            _total(fu),
            total_delta,
        ]
    )
    return f"<h2>{_e(title)}</h2>" + _table(
        ["component", "weight", "baseline n/N", "score", "follow-up n/N", "score", "Δ weighted"],
        rows,
    )


def _score(c: Mapping[str, Any], name: str, side: Mapping[str, Any]) -> Any:
    """A component's score; unassessed, the pathologist's "not evaluable" reason where given."""
    if c.get("assessed"):
        return c.get("score")
    reason = (side.get("not_evaluable") or {}).get(name)
    return f"not evaluable: {reason}" if reason else "not assessed"


def _patient(data: Mapping[str, Any]) -> str | None:
    """The pair's patient: the baseline's id, else the follow-up's (one may not record it)."""
    return data["baseline"].get("patient_id") or data["followup"].get("patient_id")


def _total(index: Mapping[str, Any]) -> str:
    if not index.get("complete"):
        names = [n.replace("_", " ") for n in index.get("not_assessed") or []]
        return f"incomplete (not assessed: {', '.join(names)})"
    return f"{index['total']}/{index['max']}"


def _panel(panel: Mapping[str, Mapping[str, Any]]) -> str:
    rows = []
    for name, rec in panel.items():
        value = rec.get("value") if rec.get("evaluable") else "not evaluable"
        extra = [rec.get("reason") or "", *(rec.get("flags") or [])]
        if "proliferative_resolved" in rec and name == "class_transition":
            got = rec["proliferative_resolved"]  # True, False, "not_applicable" or None
            said = {None: "not decided", True: "yes", False: "no"}.get(got, str(got))
            extra.append(f"proliferative resolved: {said.replace('_', ' ')}")
        rows.append([name, value, rec.get("rule"), "; ".join(x for x in extra if x)])
    return _table(["output", "value", "rule", "notes"], rows)


def _uncertainty(u: Mapping[str, Any], endpoint: str, observed: Mapping[str, Any]) -> str:
    """Endpoint probability, Δ distributions (``observed``: the deltas), sampling and bands.

    Long because it lays out the uncertainty section's tables row by row.
    """
    if not u:
        return "<p>Not computed: the endpoint was not evaluated.</p>"
    parts = []
    p = u.get("endpoint_probability")
    if p is None:
        parts.append(
            "<p>Probability of the endpoint: not available "
            f"({_e(u.get('endpoint_probability_note'))}).</p>"
        )
    else:
        parts.append(
            f"<p><b>P({_e(endpoint)} holds) = {_e(round(100 * p, 1))}%</b> "
            f'<span class="small">{_e(u.get("assumption"))}</span></p>'
        )
    if u.get("treated_as_exact") and p is not None:
        parts.append(
            '<p class="small">No lesion probabilities for '
            + _e(", ".join(u["treated_as_exact"]))
            + ": taken as exact.</p>"
        )
    for key, label in (("delta_ai", "ΔAI"), ("delta_ci", "ΔCI")):
        dist = u.get(key) or {}
        index = "activity_index" if key == "delta_ai" else "chronicity_index"
        svg = (
            delta_chart(label, int(dist["min"]), dist["p"], observed.get(index, {}).get("delta"))
            if dist.get("p")
            else None
        )
        if svg:
            parts.append(
                f'<figure><img class="chart" src="{_e(svg_uri(svg))}" alt="distribution of '
                f'{_e(label)}"><figcaption class="small">P({_e(label)} = d) from the two '
                "biopsies' total distributions; blue a fall, red a rise.</figcaption></figure>"
            )
    probs = u.get("outcome_probabilities") or {}
    rows = [
        [name, ", ".join(f"{k}: {100 * v:.1f}%" for k, v in dist.items())]
        for name, dist in probs.items()
        if dist
    ]
    if rows:
        parts.append(_table(["output", "probability of each value"], rows))
    sampling = u.get("sampling") or {}
    srows = [
        [
            r["side"],
            r["component"].replace("_", " "),
            f"{r['n']}/{r['N']}",
            r["score"],
            r.get("more_to_next_band"),
            r.get("fewer_to_lower_band"),
            _flip(r, "up"),
            _flip(r, "down"),
        ]
        for r in sampling.get("components", [])
    ]
    if srows:
        k = sampling.get("min_glomeruli_to_flip")
        summary = (
            "No single-component change of the sampled glomeruli flips the endpoint."
            if k is None
            else f"Closest flip of {endpoint}: "
            + "; or ".join(
                f"{k} {c['direction']} positive glomerul{'us' if k == 1 else 'i'} in the "
                f"{c['side']} {c['component'].replace('_', ' ')} → {c['new_value']}"
                for c in sampling.get("closest_flips", [])
            )
        )
        parts.append(
            f"<h2>Sampling view</h2><p>{_e(summary)}</p>"
            f'<p class="small">{_e(sampling.get("assumption"))}</p>'
            + _table(
                [
                    "side",
                    "component",
                    "n/N",
                    "score",
                    "+k to next band",
                    "−k to lower band",
                    "+k flips endpoint",
                    "−k flips endpoint",
                ],
                srows,
            )
        )
    bands = u.get("component_bands") or []
    if bands:
        parts.append(
            '<h2>Component bands</h2><p class="small">Probability that a component\'s band '
            "differs from the observed one: for a second core of the same size (resampled) and "
            "from uncertain lesion calls on these glomeruli (calls).</p>"
            + _table(
                ["side", "component", "score", "P(other band), resampled", "P(other band), calls"],
                [
                    [
                        b["side"],
                        b["component"].replace("_", " "),
                        b["score"],
                        _pct(b.get("p_other_band_resampled")),
                        _pct(b.get("p_other_band_calls")),
                    ]
                    for b in bands
                ],
            )
        )
    edges = u.get("band_edges") or []
    for edge in edges:
        if edge.get("doubled"):
            parts.append(
                f'<div class="warn">{_e(edge["side"])}: doubled component '
                f"{_e(edge['component'].replace('_', ' '))} sits one glomerulus from a band edge "
                "(a band move changes the AI by 2).</div>"
            )
    return "".join(parts)


def _pct(p: float | None) -> str:
    return "—" if p is None else f"{100 * p:.1f}%"


def _support(preset: Mapping[str, Any]) -> str:
    """How a preset is supported; response.json written before labels existed says validated."""
    return str(preset.get("label") or ("validated" if preset.get("validated") else "not validated"))


def _named_fields(rule: Mapping[str, Any]) -> list[str]:
    if "field" in rule:
        return [str(rule["field"])]
    parts = rule.get("all") or rule.get("any") or [rule.get("not") or {}]
    return [f for part in parts for f in _named_fields(part)]


def _rule(rule: Mapping[str, Any] | None, fields: Mapping[str, Any]) -> str:
    """A component-level rule and the value (or range) of every field it reads."""
    if not rule:
        return ""
    rows = []
    for name in dict.fromkeys(_named_fields(rule)):
        f = fields.get(name) or {}
        if "possible" in f:
            rows.append([name, f.get("value") or "open: " + " or ".join(f["possible"])])
        elif f:
            low, high = f["range"]
            rows.append([name, f["value"] if f.get("value") is not None else f"{low}–{high}"])
    return f"<p>component-level rule: <code>{_e(rule_text(rule))}</code></p>" + _table(
        ["field", "value (range while components are unassessed)"], rows
    )


def _flip(row: Mapping[str, Any], direction: str) -> str:
    k = row.get(f"flip_{direction}")
    return "—" if k is None else f"{k} → {row.get(f'flip_{direction}_value')}"


def _class_cell(side: Mapping[str, Any]) -> str:
    """A confirmed biopsy's class is the signed one; any other is still the machine's proposal."""
    klass = str(side.get("isn_rps_class"))
    if side.get("status") != "confirmed":
        return f"{klass} (proposal)"
    return klass if side.get("seal_verified") is True else f"{klass} (confirmed, seal not verified)"


def render_fragment(data: Mapping[str, Any]) -> str:
    """The report body as one ``<div>`` with its own scoped style (for notebooks)."""
    endpoint = data["endpoint"]
    status = data["status"]
    preset = data["preset"]
    value = endpoint.get("value") if status != "not_evaluable" else "not evaluable"
    bl, fu = data["baseline"], data["followup"]
    head = (
        f"<h1>Histological response: {_e(_patient(data) or 'patient not recorded')}</h1>"
        f'<p><span class="badge {_e(status)}">{_e(status)}</span> '
        f"preset <b>{_e(preset['name'])}</b>"
        + (
            ""
            if preset.get("validated")
            else f' <span class="badge not_evaluable">{_e(_support(preset).upper())}</span>'
        )
        + f"</p><p><b>{_e(endpoint['name'])}: {_e(value)}</b><br>"
        f'<span class="small">rule: {_e(endpoint.get("rule"))} · basis: {_e(endpoint.get("basis"))}'
        "</span></p>"
        f"<p>{_e(preset.get('description'))}</p>"
        f'<p class="small">support: {_e(_support(preset))} · index its source scored: '
        f"{_e(preset.get('nih_version'))}</p>" + _rule(preset.get("rule"), data.get("fields") or {})
    )
    if status != "final":
        head += (
            '<div class="warn">Machine proposal: final only once a pathologist has confirmed '
            "both biopsies.</div>"
        )
    reasons = "".join(f"<li>{_e(r)}</li>" for r in data.get("reasons") or [])
    if reasons:
        head += f"<h2>Why not evaluable</h2><ul>{reasons}</ul>"
    sides = _table(
        ["", "baseline", "follow-up"],
        [
            ["source", bl.get("source"), fu.get("source")],
            ["biopsy date", bl.get("biopsy_date"), fu.get("biopsy_date")],
            ["stain", bl.get("stain"), fu.get("stain")],
            ["status", bl.get("status"), fu.get("status")],
            ["ISN/RPS class", _class_cell(bl), _class_cell(fu)],
            [
                "adequacy",
                f"{bl['adequacy'].get('status')} ({bl['adequacy'].get('n_glomeruli')} glomeruli)",
                f"{fu['adequacy'].get('status')} ({fu['adequacy'].get('n_glomeruli')} glomeruli)",
            ],
            ["NIH version", bl.get("nih_version"), fu.get("nih_version")],
            ["lnpath version", bl.get("lnpath_version"), fu.get("lnpath_version")],
        ],
    )
    checks = _table(
        ["pre-condition", "status", "detail"],
        [[c["name"], c["status"], c["message"]] for c in data.get("preconditions", [])],
    )
    for c in data.get("preconditions", []):  # colour the status cells
        checks = checks.replace(
            f"<td>{_e(c['status'])}</td>", f'<td class="{_e(c["status"])}">{_e(c["status"])}</td>'
        )
    body = [
        head,
        "<h2>Biopsies</h2>",
        sides,
        "<h2>Pre-conditions (§3.3)</h2>",
        checks,
        _components(data, "activity_index", "Activity index (0–24)"),
        _components(data, "chronicity_index", "Chronicity index (0–12)"),
    ]
    if data.get("panel"):
        body += ["<h2>Endpoints</h2>", _panel(data["panel"])]
    body += [
        "<h2>Uncertainty</h2>",
        _uncertainty(data.get("uncertainty") or {}, endpoint["name"], data.get("deltas") or {}),
    ]
    caveats = "".join(f'<div class="warn">{_e(c)}</div>' for c in data.get("caveats") or [])
    body += ["<h2>Caveats</h2>", caveats]
    body.append(
        f'<p class="small">lnpath {_e(data.get("lnpath_version"))} · thresholds: '
        + _e(", ".join(f"{k}={v}" for k, v in preset.get("params", {}).items()))
        + "</p>"
    )
    return f'<div class="lnr"><style>{_STYLE}</style>{"".join(body)}</div>'


_STATUS_WORDS = {"final": " · final: both biopsies confirmed", "provisional": " · PROVISIONAL"}
_FONT = 'font: 7.5pt system-ui, "DejaVu Sans", sans-serif'


def _print_style(data: Mapping[str, Any]) -> str:
    """Each printed page's foot says whose comparison, the endpoint and whether it is final (the
    badge says it once, on page 1; a page of a trial's printout read alone must too)."""
    endpoint, status = data["endpoint"], str(data["status"])
    value = endpoint.get("value") if status != "not_evaluable" else "not evaluable"
    foot = f"Patient {_patient(data) or 'not recorded'} · "
    foot += f"{endpoint.get('name')}: {value}{_STATUS_WORDS.get(status, '')}"
    return (
        f'@media print {{ @page {{ margin: 12mm 12mm 14mm; @bottom-left {{ content: "'
        f'{css_text(foot)}"; {_FONT}; }} @bottom-right {{ content: "page " counter(page) '
        f'" of " counter(pages); {_FONT}; }} }} }}'
    )


def render_html(data: Mapping[str, Any]) -> str:
    """A complete, self-contained HTML document (no external assets)."""
    title = f"lnpath response – {_patient(data) or 'comparison'}"
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}</title><style>{_print_style(data)}</style></head>"
        f"<body>{render_fragment(data)}</body></html>\n"
    )
