"""ZIPBench's report: one self-contained HTML page (and a Markdown version for the asset metadata).

The page holds the results table in the paper's shape (method rows; CLIPScore to the references,
CLIPScore to the prompt, judge win rate over generic, CMMD), the demographic table (raw and
IPF-reweighted), plots, and a gallery: per sampled user, the persona summary, the base prompt, and
each method's rewritten prompt and image side by side. Images and plots are embedded as data URIs,
so the file opens from disk anywhere. Every piece of text from Reddit, a persona or a model is
escaped: the page shows it, never runs it.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1200px;color:#222;
padding:0 1rem}
h1{font-size:1.6rem}h2{font-size:1.25rem;margin-top:2.2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
table{border-collapse:collapse;margin:.6rem 0;font-size:.86rem}
th,td{border:1px solid #ccc;padding:.3rem .55rem;text-align:right;vertical-align:top}
th{background:#f3f3f3}td.l,th.l{text-align:left}
.note{color:#555;font-size:.86rem;max-width:900px}
.ahead{color:#14692c;font-weight:600}.behind{color:#a01818;font-weight:600}.tied{color:#666}
.gallery{display:flex;flex-wrap:wrap;gap:.6rem}.card{width:150px;font-size:.72rem}
.card img{width:150px;height:150px;image-rendering:pixelated;border:1px solid #bbb}
.user{border:1px solid #ddd;border-radius:6px;padding:.6rem;margin:.8rem 0}
.refs img{width:64px;height:64px;image-rendering:pixelated;border:1px solid #bbb;margin-right:3px}
.plot img{max-width:100%}
"""


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:,.3f}"
    return html.escape(str(value))


def html_table(rows: Sequence[Mapping[str, Any]], left: Sequence[str] = (), classes: Mapping[str, str] | None = None) -> str:
    """An escaped HTML table; `classes` maps a column to the name of another column holding a CSS class."""
    if not rows:
        return "<p class='note'>(no rows)</p>"
    columns = [c for c in rows[0] if not c.startswith("_")]
    head = "".join(f"<th class='{'l' if c in left else ''}'>{html.escape(c)}</th>" for c in columns)
    body = []
    for row in rows:
        cells = []
        for c in columns:
            css = ["l"] if c in left else []
            if classes and c in classes and row.get(classes[c]):
                css.append(html.escape(str(row[classes[c]])))
            cells.append(f"<td class='{' '.join(css)}'>{_cell(row.get(c))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def png_data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def file_data_uri(path: Path) -> str | None:
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None
    kind = "png" if data[:8] == b"\x89PNG\r\n\x1a\n" else "jpeg" if data[:2] == b"\xff\xd8" else None
    return f"data:image/{kind};base64," + base64.b64encode(data).decode("ascii") if kind else None


def gallery_html(users: Sequence[Mapping[str, Any]], methods: Sequence[str]) -> str:
    """users: dicts with user_id, persona_summary, references (data URIs), prompts: [{base_prompt,
    by_method: {method: {final_prompt, image (data URI)}}}]."""
    parts = []
    for user in users:
        refs = "".join(f"<img alt='reference image' src='{uri}'>" for uri in user.get("references", []) if uri)
        parts.append(f"<div class='user'><b>{html.escape(user['user_id'])}</b> "
                     f"<span class='note'>{html.escape(user.get('persona_summary') or '(no summary)')}</span>"
                     f"<div class='refs'>reference images (held out): {refs or '–'}</div>")
        for prompt in user.get("prompts", []):
            parts.append(f"<p>base prompt: <i>{html.escape(prompt['base_prompt'])}</i></p><div class='gallery'>")
            for method in methods:
                item = prompt["by_method"].get(method)
                if not item:
                    continue
                image = f"<img alt='{html.escape(method)}' src='{item['image']}'>" if item.get("image") else ""
                parts.append(f"<div class='card'>{image}<br><b>{html.escape(method)}</b><br>"
                             f"{html.escape(item['final_prompt'])}</div>")
            parts.append("</div>")
        parts.append("</div>")
    return "".join(parts)


def render_report(title: str, sections: Sequence[tuple[str, str]], notes: Sequence[str] = ()) -> str:
    """The whole page; `sections` are (heading, trusted HTML built by this module's functions)."""
    body = [f"<h1>{html.escape(title)}</h1>"]
    body += [f"<p class='note'>{html.escape(n)}</p>" for n in notes]
    for heading, content in sections:
        body.append(f"<h2>{html.escape(heading)}</h2>{content}")
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; img-src data:; "
            "style-src 'unsafe-inline'\">"
            f"<style>{_STYLE}</style></head><body>{''.join(body)}</body></html>")


def markdown_summary(rows: Sequence[Mapping[str, Any]]) -> str:
    from zipp_assets.metadata import markdown_table

    return markdown_table([{k: v for k, v in r.items() if not k.startswith("_")} for r in rows], 40, 80)


_READING = (
    "CLIPScore (ref): mean over the user's held-out reference images of 100 x max(cos, 0) between embeddings of "
    "the configured image encoder; per user first, then the mean over users, with a 95% percentile bootstrap "
    "interval over users. 'minus generic' and 'lift %' are paired by user; a method is ahead only when the "
    "interval of its difference excludes zero. Judge win rate: a win counts only when both presentation orders "
    "agree; ties count half. CMMD (pooled): the paper's biased estimator (Jayasumana et al. 2024; RBF sigma 10, "
    "x1000) between a method's images and all benchmark users' references; per user: the unbiased estimator on "
    "each user's small sets, averaged. Lower CMMD is closer."
)


_HISTORY_READING = (
    "The methods that read a user's own prompts (3- and 5-shot ZIPP, Tailored Visions), over the users who have a "
    "prompt history and over those who have none. Without a history these methods get no examples and fall back "
    "(the note says to what), so their overall row mixes two different methods; each group here is paired with "
    "generic on its own users."
)
_HUMAN_READING = (
    "The pairwise judge on people's own choices (Pick-a-Pic v2, Rapidata), asked in both orders like the "
    "benchmark's pairs: 1 when it picks the image most people picked, 0.5 for a tie, 0 otherwise; the mean over "
    "annotators (or pairs where none is published) with a 95% bootstrap interval. Chance is 0.5. The note gives the "
    "share of decided pairs that agree (Wilson interval), the agreement per vote, raw and IPF-reweighted from the "
    "voters' age and gender, and the human ceiling (how often one voter agrees with the majority)."
)
_OFFLINE_JUDGE = ("its verdict is the sign of the CLIPScore (ref) difference between the two images, so its win "
                  "rate is the same metric as CLIPScore, not a separate finding.")
_NOT_RESULTS = ("group", "note", "judge agreement with humans")
_NOT_HISTORY = ("CLIPScore (prompt)", "CMMD (pooled, biased)", "CMMD (per user, unbiased)",
                "judge agreement with humans")


def _without(row: Mapping[str, Any], columns: Sequence[str]) -> dict:
    return {k: v for k, v in row.items() if k not in columns}


def split_summary(summary: Sequence[Mapping[str, Any]]) -> tuple[list[dict], list[dict], list[dict]]:
    """The summary's rows: per method over all users; the history methods by group; the judge vs people."""
    overall, by_history, human = [], [], []
    for row in summary:
        group = row.get("group") or "all users"
        (human if group == "human preference pairs" else overall if group == "all users" else by_history).append(
            dict(row))
    return overall, by_history, human


def judge_is_clipscore(judge_name: str) -> bool:
    from zipp_assets.zipbench.scoring import judge_is_clipscore as same

    return same(judge_name)


def build_report(*, summary: list[dict], demographic_rows: list[dict], demographic_groups: list[dict],
                 raking: dict | None, gallery_users: list[dict], personas: dict[str, dict], manifest: list[dict],
                 rewrites: list[dict], methods: Sequence[str], images_root: Path, reference_cache: Path,
                 prompts_per_user: int, components: Mapping[str, str]) -> tuple[str, str]:
    """The report page and its Markdown results table, from the summary tables and the gallery's images."""
    verdict_class = {"ahead": "ahead", "behind": "behind", "tied": "tied"}
    overall, by_history, human = split_summary(summary)
    results = [{**_without(r, _NOT_RESULTS), "_class": verdict_class.get(r.get("verdict vs generic", ""), "")}
               for r in overall]
    judge = str(components.get("pairwise judge", ""))
    judge_note = f" The pairwise judge here is the {judge}: {_OFFLINE_JUDGE}" if judge_is_clipscore(judge) else ""
    sections = [("Results", html_table(results, left=("method",), classes={"minus generic": "_class",
                                                                           "lift % over generic": "_class",
                                                                           "verdict vs generic": "_class"})
                 + f"<p class='note'>{html.escape(_READING + judge_note)}</p>")]
    history_table = [{**_without(r, _NOT_HISTORY), "_class": verdict_class.get(r.get("verdict vs generic", ""), "")}
                     for r in by_history]
    sections.append(("Users with and without a prompt history", html_table(
        history_table, left=("method", "group", "note"), classes={"minus generic": "_class",
                                                                  "verdict vs generic": "_class"})
        + f"<p class='note'>{html.escape(_HISTORY_READING)}</p>"))
    sections.append(("The judge against human choices", html_table(
        [{k: r.get(k, "–") for k in ("method", "users", "judge agreement with humans", "judge verdict", "note")}
         for r in human], left=("method", "note"))
        + f"<p class='note'>{html.escape(_HUMAN_READING)}</p>"))
    sections.append(("Components", html_table([{"component": k, "what ran": v} for k, v in components.items()],
                                              left=("component", "what ran"))))
    fit = raking or {}
    fit_note = ("IPF raking failed: " + str(fit["error"])) if "error" in fit else (
        f"Raked on {', '.join(fit.get('variables', []))} to {fit.get('population', '')}: converged "
        f"{fit.get('converged')}, effective sample size {fit.get('effective_sample_size')} of {fit.get('users')} "
        f"users, largest weight / mean {fit.get('max_weight_ratio')}, largest marginal error "
        f"{fit.get('max_marginal_error')}. Target levels without any benchmark user (dropped, their share spread "
        f"over the others): {fit.get('target_levels_without_users') or 'none'}. Sources: " + "; ".join(f"{k}: {v}" for k, v in (fit.get("sources") or {}).items())
        + ". Demographics are the personas' (inferred from Reddit text; 'unknown' keeps its sample share)."
    ) if fit else "No raking."
    sections.append(("Demographic reweighting (IPF)", html_table(demographic_rows, left=("method",))
                     + f"<p class='note'>{html.escape(fit_note)}</p>"))
    sections.append(("CLIPScore (ref) by group, raw", html_table(demographic_groups, left=("variable", "level"))))
    sections.append(("Plot", "<div class='plot'>" + _bar_plot(summary) + "</div>"))
    by_key = {(m["user_id"], m["prompt_id"], m["method"]): m for m in manifest}
    prompt_of = {(r["user_id"], r["prompt_id"], r["method"]): r for r in rewrites}
    cards = []
    for user in gallery_users:
        persona = personas.get(user["user_id"], {})
        prompt_ids = sorted({m["prompt_id"] for m in manifest if m["user_id"] == user["user_id"]})[:prompts_per_user]
        prompts = []
        for prompt_id in prompt_ids:
            by_method = {}
            for method in methods:
                item = by_key.get((user["user_id"], prompt_id, method))
                rewrite = prompt_of.get((user["user_id"], prompt_id, method))
                if item and rewrite:
                    by_method[method] = {"final_prompt": rewrite["final_prompt"],
                                         "image": file_data_uri(images_root / item["image_path"])}
            base = next((r["base_prompt"] for r in prompt_of.values() if r["user_id"] == user["user_id"]
                         and r["prompt_id"] == prompt_id), "")
            prompts.append({"base_prompt": base, "by_method": by_method})
        refs = [file_data_uri(Path(reference_cache) / key[:2] / key) for key in user["reference_url_keys"][:4]
                if len(key) > 2 and key.isalnum()]
        cards.append({"user_id": user["user_id"], "persona_summary": persona.get("summary", ""), "references": refs,
                      "prompts": prompts})
    sections.append(("Gallery", gallery_html(cards, methods)))
    page = render_report("ZIPBench report", sections, notes=[
        "Offline stand-ins (template rewriter, offline renderer, pixel-statistics encoder, embedding judge: the "
        "latter the same metric as CLIPScore, not a separate finding) are named "
        "in the Components table; their numbers measure the pipeline, not the paper's models."])
    return page, markdown_summary([_without(r, _NOT_RESULTS) for r in overall])


def _bar_plot(summary: list[dict]) -> str:
    import io
    import re

    from zipp_assets.metadata import new_figure

    parsed = []
    for row in split_summary(summary)[0]:
        match = re.match(r"([-0-9.]+) \[([-0-9.]+), ([-0-9.]+)\]", str(row.get("CLIPScore (ref)", "")))
        if match:
            parsed.append((row["method"], *map(float, match.groups())))
    if not parsed:
        return "<p class='note'>(nothing to plot)</p>"
    figure, axes = new_figure(7, 3.2)
    for i, (method, estimate, low, high) in enumerate(parsed):
        colour = "#69c" if method == "zipp_shuffled" else "#c44" if method.startswith("zipp") else "#888"
        axes.bar(i, estimate, color=colour)
        axes.errorbar(i, estimate, yerr=[[estimate - low], [high - estimate]], color="black", capsize=3)
    axes.set_xticks(range(len(parsed)), [p[0] for p in parsed], rotation=30, fontsize=7)
    axes.set_ylabel("CLIPScore to references (x100)")
    lows, highs = [p[2] for p in parsed], [p[3] for p in parsed]
    axes.set_ylim(max(0.0, min(lows) - 3), max(highs) + 2)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(figure)
    return f"<img alt='CLIPScore by method' src='{png_data_uri(buffer.getvalue())}'>"
