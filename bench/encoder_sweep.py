"""Does ImageAlign help link prediction? The encoder's ablation across the world's membership knob.

    .venv/bin/python bench/encoder_sweep.py [--users 600 --months 2019-01 --shares 0,0.25,0.5 --seeds 0,1
                                             --out bench/out/encoder_sweep.json --markdown bench/out/encoder_sweep.md]

For each value of `WorldConfig.taste_aligned_share` (the share of a user's community activity that goes
to the community nearest their personal visual taste; 0 is the default world, where membership follows
the community mixture alone) one world is generated with the same world seed, so the same people,
tastes and community mixtures, and run through the pipeline's own code, offline (`offline_world.py`:
ingest, graph tables, PixelStats image embeddings and visual profiles). On each world, for each
training seed, the encoder is trained twice with the pipeline's training config (`TrainConfig`'s
defaults, the `persona_encoder` asset's): with ImageAlign (L_link + 0.5 L_align) and without it
(L_link only), the ablation `encoder_evaluation` runs. Both are scored by `encoder_evaluation`'s own
scorer (`ablations.score_encoder`) on the same held-out test links: posting accuracy (exact AUC against
every non-member), recall@10 and MRR, each with a bootstrap interval over users, and the difference
with minus without ImageAlign paired over users (`ablations.add_differences`) with its interval and
verdict (`ahead` only where the interval lies above zero).

It prints one table and writes everything as JSON (after every cell, so a killed run keeps what it
finished); with --markdown, the table as Markdown for the docs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("DGLBACKEND", "pytorch")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

KEY = b"encoder-sweep-bench"
SHARES = (0.0, 0.25, 0.5)
SEEDS = (0, 1)
WITH, WITHOUT = "with_image_align", "without_image_align"
LINK_METRICS = {"posting_accuracy": "posting accuracy (AUC)", "recall_at_10": "recall@10", "mrr": "MRR"}


def _commit() -> str:
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+uncommitted changes" if dirty else "")


def _objective(result) -> dict:
    """What the variant was trained on, read from the run itself: the loss weight, whether the model
    has an ImageAlign head, and the align loss it saw per epoch."""
    align = [h["align_loss"] for h in result.history]
    return {"use_image_align": result.config.use_image_align, "align_weight": result.config.align_weight,
            "effective_align_weight": result.config.align_weight if result.image_align_active else 0.0,
            "image_align_head": result.image_align_active, "align_loss_per_epoch": align,
            "link_loss_per_epoch": [h["link_loss"] for h in result.history]}


def run_world(share: float, seeds: tuple[int, ...], users: int, months: tuple[str, ...], world_seed: int,
              base, root: Path, say=print) -> list[dict]:
    """One world at `share`, both variants for every training seed; one cell per seed."""
    from bench.offline_world import build_world_lake, image_embeddings
    from zipp_assets.encoder.ablations import (
        EvaluationContext,
        add_differences,
        load_planted_truth,
        score_encoder,
        score_links,
    )
    from zipp_assets.encoder.evaluate import popularity_scorer, tfidf_scorer
    from zipp_assets.encoder.data import load_graph_data
    from zipp_assets.encoder.train import train
    from zipp_assets.imaging.encoders import PixelStatsEncoder
    from zipp_assets.simworld.world import WorldConfig

    started = time.perf_counter()
    config = WorldConfig(users=users, months=months, seed=world_seed, taste_aligned_share=share)
    lake_dir = build_world_lake(config, root, KEY)
    data = load_graph_data(lake_dir, PixelStatsEncoder.name)
    embeddings = image_embeddings(lake_dir, PixelStatsEncoder.name)
    truth = load_planted_truth(root / "truth", lake_dir, KEY)
    graph = {"users": data.num_users, "subreddits": data.num_subreddits,
             "users_with_visual_profile": int(data.has_profile.sum()),
             **{f"{split}_edges": len(pairs) for split, pairs in data.edges.items()}}
    world_seconds = time.perf_counter() - started
    say(f"share {share}: world and lake in {world_seconds:.0f}s: {graph}")
    cells = []
    for seed in seeds:
        ctx = EvaluationContext.build(data, embeddings, truth, seed)
        cell = {"taste_aligned_share": share, "train_seed": seed, "graph": graph,
                "world_seconds": round(world_seconds, 1)}
        # For reading the two variants: the evaluation table's baselines on the same links (no training)
        cell["baselines"] = {name: score_links(ctx, scorer, ctx.test)[0] for name, scorer in
                             (("popularity", popularity_scorer(data)), ("TF-IDF over subreddits", tfidf_scorer(data)))}
        per_user = {}
        for name, use_align in ((WITH, True), (WITHOUT, False)):
            t0 = time.perf_counter()
            result = train(data, dataclasses.replace(base, seed=seed, use_image_align=use_align))
            row, per_user[name] = score_encoder(ctx, result.model, base.device)
            cell[name] = row | {"objective": _objective(result), "train_seconds": round(result.seconds, 1),
                                "epochs_run": len(result.history), "best_epoch": result.best_epoch,
                                "best_val_posting_accuracy": result.best_val_posting_accuracy,
                                "seconds": round(time.perf_counter() - t0, 1)}
            say(f"share {share} seed {seed} {name}: posting accuracy {row['posting_accuracy']:.3f}, "
                f"MRR {row['mrr']:.3f}, {len(result.history)} epochs, {time.perf_counter() - t0:.0f}s")
        # with minus without, paired over users: add_differences writes "ours" (with) minus "this" (without)
        difference: dict = {}
        add_differences(difference, per_user[WITHOUT], per_user[WITH], seed)
        cell["difference"] = {
            metric: {"estimate": difference[f"ours_minus_this_{metric}"],
                     "low": difference[f"ours_minus_this_{metric}_low"],
                     "high": difference[f"ours_minus_this_{metric}_high"],
                     "verdict": difference[f"ours_vs_this_{metric}"]}
            for metric in ("posting_accuracy", "recall_at_10", "mrr", "visual_recall@10")
            if f"ours_minus_this_{metric}" in difference
        }
        cells.append(cell)
    return cells


def _interval(row: dict, metric: str) -> str:
    return f"{row[metric]:.3f} [{row[metric + '_low']:.3f}, {row[metric + '_high']:.3f}]"


def table_rows(result: dict) -> list[list[str]]:
    rows = []
    for cell in result["cells"]:
        for metric, label in LINK_METRICS.items():
            d = cell["difference"][metric]
            rows.append([f"{cell['taste_aligned_share']:g}", str(cell["train_seed"]), label,
                         _interval(cell[WITH], metric), _interval(cell[WITHOUT], metric),
                         f"{d['estimate']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]", d["verdict"]])
    return rows


HEADER = ["share", "seed", "metric", "with ImageAlign [95% CI]", "without [95% CI]", "with minus without [95% CI]",
          "verdict"]


def baseline_rows(result: dict) -> list[list[str]]:
    """Per world (first seed's bootstrap): the baselines' posting accuracy on the same test links."""
    rows, seen = [], set()
    for cell in result["cells"]:
        if cell["taste_aligned_share"] in seen:
            continue
        seen.add(cell["taste_aligned_share"])
        rows.append([f"{cell['taste_aligned_share']:g}"] + [_interval(cell["baselines"][name], "posting_accuracy")
                                                            for name in BASELINES])
    return rows


BASELINES = ("popularity", "TF-IDF over subreddits")


def markdown(result: dict) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(r) + " |" for r in table_rows(result)]
    header = ["share"] + [f"{name}: posting accuracy [95% CI]" for name in BASELINES]
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in baseline_rows(result)]
    return "\n".join(lines) + "\n"


def print_table(result: dict) -> None:
    widths = [max(len(h), *(len(r[i]) for r in table_rows(result))) for i, h in enumerate(HEADER)]
    print("  ".join(h.ljust(w) for h, w in zip(HEADER, widths)))
    for r in table_rows(result):
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)))
    print("\nbaselines on the same test links, posting accuracy [95% CI]:")
    for r in baseline_rows(result):
        print(f"share {r[0]}: " + ", ".join(f"{name} {value}" for name, value in zip(BASELINES, r[1:])))


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(x) for x in text.split(","))


def main(argv: list[str] | None = None) -> int:
    from zipp_assets.encoder.train import TrainConfig, config_dict
    from zipp_assets.simworld.config import parse_month_range

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=600)
    parser.add_argument("--months", default="2019-01")
    parser.add_argument("--world-seed", type=int, default=0)
    parser.add_argument("--shares", type=_floats, default=SHARES)
    parser.add_argument("--seeds", type=lambda t: tuple(int(x) for x in t.split(",")), default=SEEDS)
    # Training: the pipeline's config (TrainConfig's defaults, the persona_encoder asset's) unless capped here
    parser.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    parser.add_argument("--min-epochs", type=int, default=TrainConfig.min_epochs)
    parser.add_argument("--max-batches-per-epoch", type=int, default=None)
    parser.add_argument("--hidden", type=int, default=TrainConfig.hidden)
    parser.add_argument("--negative-pool", type=int, default=TrainConfig.negative_pool,
                        help="popularity draws a batch shares for its negatives (TrainConfig.negative_pool; "
                             "default: each edge draws its own)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path("bench/out/encoder_sweep.json"))
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args(argv)
    months = parse_month_range(args.months)
    base = TrainConfig(epochs=args.epochs, min_epochs=min(args.min_epochs, args.epochs), hidden=args.hidden,
                       max_batches_per_epoch=args.max_batches_per_epoch, negative_pool=args.negative_pool,
                       device=args.device)
    command = "python bench/encoder_sweep.py " + " ".join(argv if argv is not None else sys.argv[1:])
    result = {
        "command": command.strip(), "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "commit": _commit(),
        "sizes": {"users": args.users, "months": list(months), "world_seed": args.world_seed,
                  "shares": list(args.shares), "train_seeds": list(args.seeds)},
        "training": config_dict(base) | {"seed": "per cell", "use_image_align": "per variant"},
        "cells": [],
    }
    started = time.perf_counter()

    def save() -> None:
        result["seconds"] = round(time.perf_counter() - started, 1)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))

    for share in args.shares:
        with tempfile.TemporaryDirectory(prefix="encoder-sweep-") as folder:
            result["cells"] += run_world(share, args.seeds, args.users, months, args.world_seed, base, Path(folder),
                                         say=lambda m: print(m, flush=True))
        save()
    result["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    save()
    print(f"\n{len(result['cells'])} cells in {result['seconds'] / 60:.1f} min; {args.users} users, months "
          f"{months[0]}..{months[-1]}, commit {result['commit']}")
    print_table(result)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
