"""The validation report as one self-contained HTML page for a clinician: plain words
first, figures with what they mean beside them, charts as inline SVG. No script, no
stylesheet or font from elsewhere. Everything it shows comes from the JSON report, so the
two never disagree; every text from outside (group names from an outcomes file) is
escaped."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from agent.validation.plots import BLUE, GREY, ORANGE, Series, bar_chart, line_chart

_STATUS = {  # verdict status -> (mark, colour)
    "consistent": ("as expected", "#1e7b34"),
    "worse": ("worse here", "#b3261e"),
    "better": ("better here", "#1f5fa8"),
    "different": ("different here", "#8a5a00"),
    "not_compared": ("not compared", "#666666"),
}
_REASONS = {  # refusal reason -> what it means, for a reader who never saw the pipeline
    "no_record": "no record of the patient in the files given",
    "ambiguous_patient": "the patient name in the outcomes file belongs to several patients",
    "unmappable": "a measurement the model needs was missing from its look-back window",
    "bad_input": "the record could not be read as valid FHIR",
    "unit": "a value came in a unit that cannot be converted",
    "too_large": "the patient's record was larger than the agent accepts",
    "no_subject": "observations that name no patient",
}
_CSS = """
body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;
color:#1d1d1d;line-height:1.45}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{margin-top:2.2rem;border-bottom:1px solid #ccc}
.sub{color:#555;margin-top:0}table{border-collapse:collapse;margin:.6rem 0}
td,th{border:1px solid #ccc;padding:.25rem .55rem;text-align:right}
th{background:#f2f2f2}td:first-child,th:first-child{text-align:left}
.verdict{border-left:.4rem solid;padding:.3rem .7rem;margin:.4rem 0;background:#fafafa}
.charts{display:flex;flex-wrap:wrap;gap:1rem}.note{color:#555;font-size:.92rem}
.warn{background:#fff4e5;border:1px solid #e0a100;padding:.6rem .8rem}
"""


def render(report: Mapping[str, Any]) -> str:
    """The whole page for ``report`` (the dict ``run.validate`` returns)."""
    model = report["model"]
    title = f"Does {model['name']} {model['version']} work here?"
    period = report["period"]
    when = f"{period['first']} to {period['last']}" if period else "dates not shown"
    body = [
        f"<h1>{escape(title)}</h1>",
        f'<p class="sub">Local validation on this site\'s own history ({escape(when)}), scored '
        "by the same bundle and site mapping that serve predictions. Figures are aggregates; "
        f"groups of fewer than {report['method']['subgroup_min_patients']} patients are not "
        "shown.</p>",
        _summary(report),
        _counts(report["counts"]),
    ]
    overall = report["overall"]
    if overall["suppressed"]:
        body.append(
            '<p class="warn">Too few patients were scored to show any figure '
            f"({escape(overall['reason'])}).</p>"
        )
    else:
        body += [
            _discrimination(overall),
            _calibration(overall),
            _thresholds(overall, model),
            _subgroups(report["subgroups"], model),
        ]
    body += [_training(report), _methods(report)]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>"
        + "\n".join(body)
        + "</body></html>\n"
    )


def _number(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _estimate(value: Mapping[str, float | None] | None, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    text = _number(value["value"], digits)
    if value.get("low") is not None:
        text += f" ({_number(value['low'], digits)} to {_number(value['high'], digits)})"
    return text


def _summary(report: Mapping[str, Any]) -> str:
    verdicts = report["verdicts"]
    if not verdicts:
        return "<h2>In short</h2><p>No figure could be judged.</p>"
    items = []
    for verdict in verdicts:
        mark, colour = _STATUS[verdict["status"]]
        items.append(
            f'<div class="verdict" style="border-color:{colour}"><strong style="color:{colour}">'
            f"{escape(verdict['figure'])}: {mark}.</strong> {escape(verdict['text'])}</div>"
        )
    return "<h2>In short</h2>" + "".join(items)


def _counts(counts: Mapping[str, Any]) -> str:
    rows = [
        ("Labelled moments in the outcomes file", counts["labelled"]),
        ("Scored", counts["scored"]),
    ]
    for reason, count in counts["refused"].items():
        meaning = _REASONS.get(reason, "refused by the agent")
        rows.append((f"Not scored: {meaning} ({reason})", count))
    rows.append(
        ("Patients in the records with no labelled moment", counts["records_without_outcome"])
    )
    for reason, count in counts["unreadable_records"].items():
        rows.append((f"Unreadable records ({reason})", count))
    cells = "".join(f"<tr><td>{escape(name)}</td><td>{value}</td></tr>" for name, value in rows)
    return (
        "<h2>What was scored</h2><p>Each labelled moment is scored as the live agent would have "
        "scored it then: a moment the agent would have refused is refused here too, and "
        "counted below rather than guessed.</p>"
        f"<table><tr><th>Moments</th><th>Count</th></tr>{cells}</table>"
    )


def _discrimination(overall: Mapping[str, Any]) -> str:
    roc = line_chart(
        "ROC curve",
        "1 - specificity (false alarms among those without the outcome)",
        "Sensitivity",
        [
            Series("this site", overall["roc"], BLUE),
            Series("chance", [(0, 0), (1, 1)], GREY, dashed=True),
        ],
    )
    distribution = overall["distribution"]
    bins = distribution["bins"]
    groups = [
        Series(label, [(i / bins, share) for i, share in enumerate(shares)], colour)
        for label, shares, colour in (
            ("had the outcome", distribution["outcome"], ORANGE),
            ("did not", distribution["no_outcome"], BLUE),
        )
        if shares is not None
    ]
    histogram = bar_chart(
        "Risk scores by outcome", "Predicted risk (bins of 0.1)", "Share of the group", groups
    )
    if len(groups) < 2:
        histogram += (
            '<p class="note">An outcome group of fewer than the minimum of patients is not '
            "drawn.</p>"
        )
    return (
        "<h2>Does it tell apart who has the outcome?</h2>"
        f"<p><strong>AUROC {_estimate(overall['auroc'])}</strong>: the chance that a patient "
        "who had the outcome was given a higher risk than one who did not. 0.5 is a coin toss, "
        "1 is perfect; 0.7 to 0.8 is usually called acceptable, above 0.8 good. In brackets, "
        "the 95 % confidence interval.</p>"
        f"<p><strong>AUPRC {_number(overall['auprc'])}</strong> (average precision): how "
        "precise the alerts are across all thresholds. It depends on how common the outcome is "
        f"(here {_estimate(overall['prevalence'])}); a useless model scores about that.</p>"
        f'<div class="charts">{roc}{histogram}</div>'
        '<p class="note">The better the model, the more the orange bars sit to the right of '
        "the blue ones.</p>"
    )


def _calibration(overall: Mapping[str, Any]) -> str:
    points = [(b["mean_predicted"], b["observed_rate"]) for b in overall["reliability"]]
    chart = line_chart(
        "Calibration",
        "Predicted risk (group average)",
        "Observed rate of the outcome",
        [
            Series("this site", points, ORANGE, markers=True),
            Series("perfect", [(0, 0), (1, 1)], GREY, dashed=True),
        ],
    )
    return (
        "<h2>Are the risks right?</h2>"
        "<p>Patients are put in groups of equal size by predicted risk; each point compares "
        "a group's average predicted risk with how often the outcome really happened. Points "
        "on the dashed line mean a predicted 20 % came true for 20 %.</p>"
        f'<div class="charts">{chart}</div><table>'
        "<tr><th>Figure</th><th>Here (95 % interval)</th><th>Ideal</th><th>Meaning</th></tr>"
        f"<tr><td>Brier score</td><td>{_estimate(overall['brier'])}</td><td>0</td>"
        "<td>average squared error of the risk; lower is better</td></tr>"
        f"<tr><td>Calibration intercept</td><td>{_estimate(overall['calibration_intercept'], 2)}"
        "</td><td>0</td><td>below 0: risks too high on average; above 0: too low</td></tr>"
        f"<tr><td>Calibration slope</td><td>{_estimate(overall['calibration_slope'], 2)}</td>"
        "<td>1</td><td>below 1: risks too extreme; above 1: too modest</td></tr>"
        f"<tr><td>Mean predicted risk</td><td>{_percent(overall['mean_predicted'])}</td>"
        f"<td>{_percent(overall['prevalence']['value'])}</td>"
        "<td>should match how often the outcome happened</td></tr></table>"
    )


def _thresholds(overall: Mapping[str, Any], model: Mapping[str, Any]) -> str:
    rows = "".join(
        f"<tr><td>{escape(row['name'])} (risk at or above {row['threshold']:g})</td>"
        f"<td>{_percent(row['sensitivity'])}</td><td>{_percent(row['specificity'])}</td>"
        f"<td>{_percent(row['ppv'])}</td><td>{_percent(row['npv'])}</td>"
        f"<td>{row['alerts_per_100']:.1f}</td></tr>"
        for row in overall["thresholds"]
    )
    return (
        f"<h2>At the alert thresholds ({escape(model['risk_output'])})</h2>"
        "<p><em>Sensitivity</em>: of those who had the outcome, how many were alerted. "
        "<em>Specificity</em>: of those who did not, how many were left alone. <em>PPV</em>: "
        "of the alerts, how many were right. <em>NPV</em>: of the patients not alerted, how "
        "many indeed did not have the outcome. <em>Alerts per 100</em>: the workload, per 100 "
        "scored moments.</p><table><tr><th>Threshold</th><th>Sensitivity</th>"
        "<th>Specificity</th><th>PPV</th><th>NPV</th><th>Alerts per 100</th></tr>"
        f"{rows}</table>"
    )


def _subgroups(dimensions: Sequence[Mapping[str, Any]], model: Mapping[str, Any]) -> str:
    names = list(model["thresholds"])
    head = (
        "<tr><th>Group</th><th>Patients</th><th>Outcome rate</th><th>AUROC (95 %)</th>"
        "<th>Brier</th><th>Calibration slope</th>"
        + "".join(f"<th>{escape(n)}: sensitivity / PPV</th>" for n in names)
        + "</tr>"
    )
    parts = [
        "<h2>By subgroup</h2><p>The same figures for each group. A model can work on "
        "average and fail one group; intervals are wide for small groups.</p>"
    ]
    for dimension in dimensions:
        rows = []
        for group in dimension["groups"]:
            label = escape(group["group"])
            if group["suppressed"]:
                rows.append(
                    f'<tr><td>{label}</td><td colspan="{5 + len(names)}">fewer than '
                    "the minimum of patients: not shown</td></tr>"
                )
                continue
            cells = "".join(
                f"<td>{_percent(t['sensitivity'])} / {_percent(t['ppv'])}</td>"
                for t in group["thresholds"]
            )
            rows.append(
                f"<tr><td>{label}</td><td>{group['patients']}</td>"
                f"<td>{_percent(group['prevalence']['value'])}</td>"
                f"<td>{_estimate(group['auroc'])}</td><td>{_number(group['brier']['value'])}</td>"
                f"<td>{_estimate(group['calibration_slope'], 2)}</td>{cells}</tr>"
            )
        hidden = dimension["suppressed_groups"]
        note = (
            f'<p class="note">{hidden} further group(s) with fewer than the minimum of patients '
            "are neither shown nor named.</p>"
            if hidden
            else ""
        )
        parts.append(
            f"<h3>By {escape(dimension['dimension'])}</h3><table>{head}{''.join(rows)}</table>"
            + note
        )
    return "".join(parts)


def _training(report: Mapping[str, Any]) -> str:
    training = [v for v in report["verdicts"] if v["figure"] in report["training_metrics"]]
    if not training:
        return (
            "<h2>Beside the training figures</h2><p>The bundle records no training metrics "
            "to compare with.</p>"
        )
    rows = "".join(
        f"<tr><td>{escape(v['figure'])}</td><td>{_number(v['training'])}</td>"
        f"<td>{_estimate(v['local']) if isinstance(v['local'], Mapping) else _number(v['local'])}"
        f"</td><td>{_STATUS[v['status']][0]}</td></tr>"
        for v in training
    )
    return (
        "<h2>Beside the training figures</h2><p>What the model's publisher measured (from "
        "the signed bundle) and the same figure here. A training figure outside this site's "
        "95 % interval differs by more than chance.</p><table><tr><th>Figure</th>"
        f"<th>Training</th><th>Here (95 % interval)</th><th>Verdict</th></tr>{rows}</table>"
    )


def _methods(report: Mapping[str, Any]) -> str:
    method = report["method"]
    model = report["model"]
    items = "".join(
        f"<li>{escape(key.replace('_', ' '))}: {escape(str(value))}</li>"
        for key, value in method.items()
    )
    return (
        '<h2>Methods</h2><ul class="note">'
        f"<li>model {escape(model['name'])} {escape(model['version'])}, bundle sha256 "
        f"{escape(model['bundle_digest'])}, risk output {escape(model['risk_output'])}</li>"
        f"{items}</ul>"
    )
