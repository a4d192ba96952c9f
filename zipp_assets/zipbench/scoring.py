"""Score every generated image, then summarise per method with intervals over users.

Per image: CLIPScore x100 against the user's held-out reference images (image-image) and against
its base prompt (image-text; only with an image encoder that has a text tower, such as open_clip:
the offline pixel-statistics encoder has none, and the column is then empty and says so). Per
(user, prompt): a pairwise judge between each method's image and generic's, in both orders.

The summary per method: mean CLIPScore over users (each user's images averaged first) with a
bootstrap interval over users; the lift over `generic` in percent, paired by user, with its
interval; the judge's win rate over generic; CMMD of the method's images against all benchmark
users' references (the paper's biased estimator on the pooled sets) and the mean per-user
unbiased CMMD. IPF weights from the users' demographics give each method's reweighted score.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from zipp_assets.stats import Interval, bootstrap_mean, bootstrap_relative_lift, paired_difference
from zipp_assets.zipbench.judge import (
    Candidate,
    JudgeCase,
    PairVerdict,
    PairwiseJudge,
    Verdict,
    judge_pairs,
    win_rate,
)
from zipp_assets.zipbench.metrics import clip_score_image_image, clip_score_image_text, cmmd, cmmd_per_user, mean_by_user
from zipp_assets.zipbench.raking import DemographicTargets, rake, reweighted_scores

BASELINE = "generic"


def embed_images(paths: Sequence[Path], encoder, batch_size: int = 64,
                 progress: Callable[[str], None] | None = None) -> np.ndarray:
    """Embeddings of image files in order (the image encoder's L2-normalised rows)."""
    parts = []
    for start in range(0, len(paths), batch_size):
        images = []
        for path in paths[start : start + batch_size]:
            with Image.open(path) as image:
                images.append(image.convert("RGB"))
        parts.append(np.asarray(encoder.encode(images), dtype=np.float32))
        if progress and (start // batch_size) % 20 == 0:
            progress(f"embedded {min(start + batch_size, len(paths))}/{len(paths)} generated images")
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


@dataclass
class ImageScores:
    rows: list[dict]  # per generated image: user_id, prompt_id, method, clip_ref, clip_text
    judgements: list[dict]  # per (user, prompt, method != generic): the pair verdict against generic
    generated_embeddings: np.ndarray
    reference_embeddings: np.ndarray
    reference_user: np.ndarray
    judge: str
    text_scores: bool
    seconds: float


def score_images(manifest: list[dict], users: list[dict], reference_embedding: dict[str, np.ndarray],
                 images_root: Path, encoder, judge: PairwiseJudge, persona_text: dict[str, str],
                 progress: Callable[[str], None] | None = None, judge_root: Path | None = None,
                 reference_file: Callable[[str], Path] | None = None) -> ImageScores:
    """`manifest`: rows of zipbench_images; `users`: rows of zipbench_users; `reference_embedding`: url_key ->
    embedding by the same image encoder; `persona_text`: user_id -> the persona the judge may read.
    `judge_root`: the folder a judge that looks at pixels resolves image paths under (its client's
    `image_root`); candidates and the user's reference images (`reference_file`: url_key -> file) go to it
    as paths relative to that folder, read one request at a time, never all held in memory."""
    started = time.perf_counter()
    index = {u["user_id"]: i for i, u in enumerate(users)}
    manifest = [m for m in manifest if m["user_id"] in index]
    generated = embed_images([Path(images_root) / m["image_path"] for m in manifest], encoder, progress=progress)
    gen_user = np.array([index[m["user_id"]] for m in manifest], dtype=np.int64)
    refs, ref_user = [], []
    for u in users:
        for key in u["reference_url_keys"]:
            if key in reference_embedding:
                refs.append(reference_embedding[key])
                ref_user.append(index[u["user_id"]])
    dim = generated.shape[1] if len(generated) else (len(refs[0]) if refs else 1)
    ref_emb = np.asarray(refs, dtype=np.float32).reshape(len(refs), dim)
    ref_user_arr = np.asarray(ref_user, dtype=np.int64)
    image_image = clip_score_image_image(generated, gen_user, ref_emb, ref_user_arr).scores if len(manifest) else \
        np.zeros(0)
    text_scores = hasattr(encoder, "encode_text")
    clip_text = np.full(len(manifest), np.nan)
    if text_scores and manifest:
        prompts = sorted({m["base_prompt"] for m in manifest})
        position = {p: i for i, p in enumerate(prompts)}
        text_emb = np.asarray(encoder.encode_text(prompts), dtype=np.float32)
        clip_text = clip_score_image_text(generated, text_emb, np.array([position[m["base_prompt"]] for m in manifest]))
    rows = [{"user_id": m["user_id"], "prompt_id": m["prompt_id"], "method": m["method"], "shard": m["shard"],
             "clip_ref": float(image_image[i]), "clip_text": float(clip_text[i])} for i, m in enumerate(manifest)]
    # Pairs against generic for the judge, one case per (user, prompt).
    by_key = {(m["user_id"], m["prompt_id"], m["method"]): i for i, m in enumerate(manifest)}
    ref_by_user: dict[int, list[int]] = {}
    for r, u in enumerate(ref_user):
        ref_by_user.setdefault(u, []).append(r)
    def judged_path(image_path: str) -> str:
        path = Path(images_root) / image_path
        return str(path.relative_to(judge_root)) if judge_root is not None else str(path)

    reference_images: dict[str, tuple[str, ...]] = {}
    if judge_root is not None and reference_file is not None:
        for u in users:
            files = [reference_file(key) for key in u["reference_url_keys"]]
            reference_images[u["user_id"]] = tuple(str(f.relative_to(judge_root)) for f in files if f.is_file())
    items, keys = [], []
    for (user, prompt, method), i in sorted(by_key.items()):
        j = by_key.get((user, prompt, BASELINE))
        if method == BASELINE or j is None:
            continue
        u = index[user]
        case = JudgeCase(case_id=f"{user}/{prompt}", user=u, persona_text=persona_text.get(user, ""),
                         prompt=manifest[i]["base_prompt"], reference_images=reference_images.get(user, ()),
                         reference_embeddings=ref_emb[ref_by_user.get(u, [])])
        items.append((case, Candidate(method, judged_path(manifest[i]["image_path"]), generated[i]),
                      Candidate(BASELINE, judged_path(manifest[j]["image_path"]), generated[j])))
        keys.append((user, prompt, method))
    verdicts = judge_pairs(judge, items) if items else []
    judgements = [{"user_id": k[0], "prompt_id": k[1], "method": k[2], "opponent": BASELINE,
                   "winner": {"a": k[2], "b": BASELINE}.get(v.winner, "tie"), "first_order": v.verdict_ab.choice,
                   "second_order": v.verdict_ba.choice, "reason": v.verdict_ab.reason or v.verdict_ba.reason or None,
                   "judge": v.judge} for k, v in zip(keys, verdicts)]
    return ImageScores(rows=rows, judgements=judgements, generated_embeddings=generated, reference_embeddings=ref_emb,
                       reference_user=ref_user_arr, judge=judge.name, text_scores=text_scores,
                       seconds=time.perf_counter() - started)


def _interval(i: Interval, digits: int = 3) -> str:
    if i.n == 0 or not np.isfinite(i.estimate):
        return "–"
    return f"{i.estimate:.{digits}f} [{i.low:.{digits}f}, {i.high:.{digits}f}]"


def per_user_means(rows: list[dict], column: str, users: dict[str, int]) -> dict[str, dict[int, float]]:
    """method -> user index -> mean of that user's per-image `column`."""
    out = {}
    for method in sorted({r["method"] for r in rows}):
        mine = [r for r in rows if r["method"] == method]
        out[method] = mean_by_user(np.array([r[column] for r in mine], dtype=np.float64),
                                   np.array([users[r["user_id"]] for r in mine], dtype=np.int64))
    return out


def summarise(scores: ImageScores, manifest: list[dict], users: list[dict], methods: Sequence[str],
              targets: DemographicTargets | None, seed: int = 0) -> dict:
    """The results table (one row per method, intervals over users) and the demographic table."""
    index = {u["user_id"]: i for i, u in enumerate(users)}
    ref_means = per_user_means(scores.rows, "clip_ref", index)
    text_means = per_user_means(scores.rows, "clip_text", index) if scores.text_scores else {}
    method_of = np.array([m["method"] for m in manifest if m["user_id"] in index])
    gen_user = np.array([index[m["user_id"]] for m in manifest if m["user_id"] in index], dtype=np.int64)
    verdicts_by_method: dict[str, list] = {}
    for j in scores.judgements:
        verdicts_by_method.setdefault(j["method"], []).append(j)
    base = ref_means.get(BASELINE, {})
    results = []
    for method in methods:
        if method not in ref_means:
            continue
        clip_ref = bootstrap_mean(np.array(list(ref_means[method].values())), seed=seed)
        clip_text = bootstrap_mean(np.array(list(text_means[method].values())), seed=seed) if text_means else None
        row = {"method": method, "users": clip_ref.n, "CLIPScore (ref)": _interval(clip_ref, 2),
               "CLIPScore (prompt)": _interval(clip_text, 2) if clip_text else "– (no text tower)"}
        if method != BASELINE and base:
            diff = paired_difference(ref_means[method], base, seed=seed)
            lift = bootstrap_relative_lift(ref_means[method], base, seed=seed)
            row.update({"minus generic": _interval(diff, 2), "lift % over generic": _interval(lift, 1),
                        "verdict vs generic": diff.verdict()})
            judged = _judge_rate(verdicts_by_method.get(method, []), method, index, seed)
            compared = judged.wins + judged.ties + judged.losses if judged else 0
            # A comparison the judge could not answer is a forced tie: a rate made only of those says nothing.
            answered = judged is not None and judged.failures < compared
            row["judge win rate vs generic"] = _interval(judged.overall, 3) if answered else "–"
            row["judge verdict"] = judged.verdict() if answered else "no verdict: every comparison failed" \
                if judged else "–"
            row["judge failures"] = f"{judged.failures} of {compared}" if judged else "–"
        else:
            row.update({"minus generic": "–", "lift % over generic": "–", "verdict vs generic": "–",
                        "judge win rate vs generic": "–", "judge verdict": "–", "judge failures": "–"})
        mask = method_of == method
        if mask.sum() and len(scores.reference_embeddings):
            pooled = cmmd(scores.reference_embeddings, scores.generated_embeddings[mask])
            per_user = cmmd_per_user(scores.generated_embeddings[mask], gen_user[mask], scores.reference_embeddings,
                                     scores.reference_user)
            per_user_mean = bootstrap_mean(np.array(list(per_user.values.values())), seed=seed)
            row.update({"CMMD (pooled, biased)": round(pooled.value, 3),
                        "CMMD (per user, unbiased)": _interval(per_user_mean, 3)})
        row.update({"_clip_ref": clip_ref, "_per_user": ref_means[method]})
        results.append(row)
    return {"results": results, "demographics": demographic_table(results, users, targets, seed)}


def _judge_rate(judgements: list[dict], method: str, index: dict[str, int], seed: int):
    if not judgements:
        return None
    verdicts = [PairVerdict(case_id=f"{j['user_id']}/{j['prompt_id']}", user=index[j["user_id"]], method_a=method,
                            method_b=j["opponent"],
                            winner={method: "a", j["opponent"]: "b"}.get(j["winner"], "tie"),
                            verdict_ab=Verdict(j["first_order"], j["reason"] or ""),
                            verdict_ba=Verdict(j["second_order"], j["reason"] or ""), judge=j["judge"])
                for j in judgements]
    return win_rate(verdicts, method, BASELINE, seed=seed)


def targets_for_sample(frame: pd.DataFrame, variables: Sequence[str], targets: DemographicTargets
                       ) -> tuple[dict[str, dict[str, float]], dict[str, list[str]]]:
    """The target margins restricted to levels the sample has, renormalised; and the levels dropped.

    Raking cannot give weight to people it has not got: a target level with no benchmark user (say,
    no persona states an age of 45-54) is dropped and its population share spread over the other
    levels in proportion. The report lists every dropped level, so the reweighting says what it
    could not correct for."""
    margins, dropped = {}, {}
    for variable in variables:
        present = set(frame[variable])
        kept = {level: share for level, share in targets.marginals[variable].items() if level in present}
        dropped[variable] = sorted(set(targets.marginals[variable]) - set(kept))
        total = sum(kept.values())
        if total <= 0:
            raise ValueError(f"no benchmark user has any level of {variable!r} the target table covers")
        margins[variable] = {level: share / total for level, share in kept.items()}
    return margins, dropped


def rake_users(users: list[dict], targets: DemographicTargets) -> tuple[dict[int, float], dict]:
    """IPF weights of the benchmark users (by index) to the target margins, and a description of the fit."""
    variables = [v for v in ("age_band", "gender") if v in targets.marginals]
    frame = pd.DataFrame([{v: u[v] for v in variables} for u in users])
    margins, dropped = targets_for_sample(frame, variables, targets)
    result = rake(frame, variables, margins,
                  sample_share_levels={v: set(levels) | {"unknown"} for v, levels in targets.sample_share_levels.items()},
                  max_weight_ratio=10.0)
    fit = {"variables": variables, "converged": result.converged, "iterations": result.iterations,
           "effective_sample_size": round(result.effective_sample_size, 1), "users": len(users),
           "max_marginal_error": round(result.max_marginal_error, 5), "max_weight_ratio": round(result.max_weight_ratio, 2),
           "target_levels_without_users": {v: levels for v, levels in dropped.items() if levels},
           "population": targets.population, "sources": targets.sources}
    return {i: float(w) for i, w in enumerate(result.weights)}, fit


def demographic_table(results: list[dict], users: list[dict], targets: DemographicTargets | None, seed: int) -> dict:
    """Per method: CLIPScore raw and IPF-reweighted and the difference in percent; per group: raw means."""
    out: dict = {"rows": [], "groups": [], "fit": None}
    if not users or not results:
        return out
    if targets is not None:
        try:
            weights, fit = rake_users(users, targets)
        except ValueError as error:  # a level the targets cannot place: reported, not hidden
            out["fit"] = {"error": str(error)}
            weights = None
        else:
            out["fit"] = fit
        if weights is not None:
            for row in results:
                shifted = reweighted_scores(row["_per_user"], weights, seed=seed)
                out["rows"].append({"method": row["method"], "raw": _interval(shifted.raw, 2),
                                    "IPF-reweighted": _interval(shifted.reweighted, 2),
                                    "difference %": _interval(shifted.difference_percent, 2)})
    for variable in ("age_band", "gender", "visual_interest"):
        levels = sorted({u[variable] for u in users})
        for level in levels:
            members = {i for i, u in enumerate(users) if u[variable] == level}
            group = {"variable": variable, "level": level, "users": len(members)}
            for row in results:
                values = [v for u, v in row["_per_user"].items() if u in members]
                group[row["method"]] = round(float(np.mean(values)), 2) if values else None
            out["groups"].append(group)
    return out


# -- the summary's further rows: users with and without a prompt history; the offline judge's label --

HISTORY_METHODS = ("zipp_3shot", "zipp_5shot", "tailored_visions")  # the methods that read a user's prompt history
WITH_HISTORY, WITHOUT_HISTORY, ALL_USERS = "with prompt history", "without prompt history", "all users"
FALLBACK = {
    "zipp_3shot": "no history: no examples, so the same request as zipp_0shot",
    "zipp_5shot": "no history: no examples, so the same request as zipp_0shot",
    "tailored_visions": "no history: nothing to retrieve, so a request without examples",
}
OFFLINE_JUDGE_LABEL = "same metric as CLIPScore (ref), not a separate finding"


def judge_is_clipscore(judge_name: str) -> bool:
    """Whether the judge is the offline embedding judge: cosine to the mean reference embedding, which is
    CLIPScore (ref) compared between the two images, so its verdicts follow the CLIPScore difference."""
    return str(judge_name).startswith("offline embedding judge")


def history_rows(scores: ImageScores, users: list[dict], methods: Sequence[str], seed: int = 0) -> list[dict]:
    """For each method that reads a prompt history, its results over the users with one and over the users
    without one (who get no examples: the method falls back), each group paired with generic on its users."""
    index = {u["user_id"]: i for i, u in enumerate(users)}
    with_history = {index[u["user_id"]] for u in users if u.get("n_history_prompts")}
    ref_means = per_user_means(scores.rows, "clip_ref", index)
    base = ref_means.get(BASELINE, {})
    judged_by_method: dict[str, list[dict]] = {}
    for j in scores.judgements:
        judged_by_method.setdefault(j["method"], []).append(j)
    rows = []
    for method in methods:
        if method not in HISTORY_METHODS or method not in ref_means:
            continue
        for has, group in ((True, WITH_HISTORY), (False, WITHOUT_HISTORY)):
            mine = {u: s for u, s in ref_means[method].items() if (u in with_history) == has}
            clip = bootstrap_mean(np.array(list(mine.values())), seed=seed)
            row = {"method": method, "group": group, "users": clip.n, "CLIPScore (ref)": _interval(clip, 2),
                   "minus generic": "–", "lift % over generic": "–", "verdict vs generic": "–",
                   "judge win rate vs generic": "–", "judge verdict": "–",
                   "note": "" if has else FALLBACK[method]}
            if mine and base:
                diff = paired_difference(mine, base, seed=seed)
                try:
                    lift = _interval(bootstrap_relative_lift(mine, base, seed=seed), 1)
                except ValueError:
                    lift = "–"
                row.update({"minus generic": _interval(diff, 2), "lift % over generic": lift,
                            "verdict vs generic": diff.verdict() if diff.n else "–"})
            members = set(mine)
            judged = _judge_rate([j for j in judged_by_method.get(method, []) if index.get(j["user_id"]) in members],
                                 method, index, seed)
            if judged and judged.overall.n:
                row.update({"judge win rate vs generic": _interval(judged.overall, 3),
                            "judge verdict": judged.verdict()})
            rows.append(row)
    return rows


def label_offline_judge(rows: list[dict], judge_name: str) -> list[dict]:
    """With the offline embedding judge, every judge verdict is marked as the CLIPScore comparison it is."""
    if not judge_is_clipscore(judge_name):
        return rows
    for row in rows:
        if row.get("judge verdict") not in (None, "–"):
            row["judge verdict"] = f"{row['judge verdict']} ({OFFLINE_JUDGE_LABEL})"
    return rows
