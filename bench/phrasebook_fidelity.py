"""Persona fidelity of the template backend on one small world per phrasebook, against planted truth.

    .venv/bin/python bench/phrasebook_fidelity.py [--users 400 --months 2019-01 --seed 0 --out bench/out/pf.json]

The same world (same seed, so the same people, tastes and memberships) is written in each shipped
phrasebook and run through the pipeline's own code, offline: ingest, image posts, edges, graph
tables, PixelStats image embeddings and visual profiles, a one-epoch encoder (for the attended
communities), evidence, template personas, and `personas.fidelity.fidelity_table` (each attribute
against a control that verbalizes every user from another user's evidence; bootstrap intervals
over users). It prints one table per phrasebook and writes all rows as JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("DGLBACKEND", "pytorch")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

KEY = b"phrasebook-fidelity-bench"


def run(phrasebook: str, users: int, months: tuple[str, ...], seed: int, root: Path) -> list[dict]:
    from bench.offline_world import build_world_lake
    from zipp_assets import lake as lake_io
    from zipp_assets.encoder.data import load_graph_data
    from zipp_assets.encoder.inference import embed_users_to_lake
    from zipp_assets.encoder.train import TrainConfig, train
    from zipp_assets.graph.visual import encoder_slug
    from zipp_assets.imaging.encoders import PixelStatsEncoder
    from zipp_assets.llm.template import TemplateLLM
    from zipp_assets.llm.tokens import token_counter
    from zipp_assets.personas.descriptors import pixel_stats_descriptors
    from zipp_assets.personas.evidence import EVIDENCE, EvidenceConfig, build_evidence
    from zipp_assets.personas.fidelity import control_personas, fidelity_table
    from zipp_assets.personas.shards import SHARD_KEYS
    from zipp_assets.personas.template_rules import template_persona
    from zipp_assets.personas.verbalize import PERSONAS, persona_of, verbalize_shard, verbalize_texts
    from zipp_assets.simworld.world import WorldConfig
    from zipp_assets.truth import planted_users

    config = WorldConfig(users=users, months=months, seed=seed, phrasebook=phrasebook)
    lake_dir = build_world_lake(config, root, KEY)
    data = load_graph_data(lake_dir, PixelStatsEncoder.name)
    train_config = TrainConfig(hidden=16, heads=2, fanouts=(5, 5), batch_size=256, epochs=1, negatives=4,
                               max_batches_per_epoch=4)
    model = train(data, dataclasses.replace(train_config, min_epochs=1)).model
    embed_users_to_lake(model, data.message_graph(), data, lake_dir, top_k=5)
    build_evidence(lake_dir, KEY, SHARD_KEYS, EvidenceConfig(), token_counter("template"), pixel_stats_descriptors,
                   {"encoder": encoder_slug(PixelStatsEncoder.name)})
    llm = TemplateLLM(template_persona)
    for shard in SHARD_KEYS:
        verbalize_shard(lake_dir, shard, llm, llm.model, root / "work")
    truth = planted_users(root / "truth", KEY)
    rows = [r for r in lake_io.read_table(lake_dir, PERSONAS).to_pylist() if r["ok"] and r["user_id"] in truth]
    mined = {r["user_id"]: persona_of(r) for r in rows}
    evidence = {r["user_id"]: r["evidence_text"]
                for r in lake_io.read_table(lake_dir, EVIDENCE, columns=["user_id", "evidence_text"]).to_pylist()
                if r["user_id"] in mined}
    controls = control_personas(evidence, lambda texts: verbalize_texts(llm, texts), seed=seed)
    return fidelity_table(mined, controls, truth, seed=seed)


def main(argv: list[str] | None = None) -> int:
    from zipp_assets.simworld.config import parse_month_range
    from zipp_assets.simworld.phrasebook import available

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=400)
    parser.add_argument("--months", default="2019-01")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--phrasebooks", default=",".join(available()))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    results = {}
    for name in args.phrasebooks.split(","):
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as folder:
            table = run(name, args.users, parse_month_range(args.months), args.seed, Path(folder))
        results[name] = table
        print(f"\n{name}: {table[0]['users'] if table else 0} users, {time.perf_counter() - started:.0f}s")
        print(f"{'attribute':16} {'persona [95% CI]':26} {'control [95% CI]':26} {'lead [95% CI]':28} verdict")
        for r in table:
            print(f"{r['attribute']:16} {r['persona']:.3f} [{r['persona_low']:.3f}, {r['persona_high']:.3f}]"
                  f"{'':5} {r['control']:.3f} [{r['control_low']:.3f}, {r['control_high']:.3f}]{'':5} "
                  f"{r['lead']:+.3f} [{r['lead_low']:+.3f}, {r['lead_high']:+.3f}]{'':4} {r['verdict']}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
