"""python -m zipp_assets.simworld generate --out data/raw --users 2000 --months 2019-01:2019-03 --seed 0"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from zipp_assets.reddit.synthetic import mark_synthetic_world
from zipp_assets.simworld.phrasebook import available
from zipp_assets.simworld.world import WorldConfig, generate_world, parse_month_range


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zipp_assets.simworld", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="write RC_/RS_YYYY-MM.zst dumps, cached images, prompt histories and the planted truth")
    gen.add_argument("--out", type=Path, required=True, help="raw folder: dumps go to OUT/reddit, images to OUT/images")
    gen.add_argument("--truth", type=Path, help="folder for the planted truth tables (default: OUT/../truth)")
    gen.add_argument("--users", type=int, default=2000)
    gen.add_argument("--months", default="2019-01:2019-03", help="YYYY-MM or YYYY-MM:YYYY-MM")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--communities", type=int, default=12)
    gen.add_argument("--comments-per-user", type=float, default=6.0, help="mean comments per user per month")
    gen.add_argument("--submissions-per-user", type=float, default=1.0, help="mean submissions per user per month")
    gen.add_argument("--malformed-rate", type=float, default=0.0002)
    gen.add_argument("--personal-share", type=float, default=0.5,
                     help="share of each user's visual taste that is personal, not from their communities (0..1)")
    gen.add_argument("--prompt-history-share", type=float, default=WorldConfig.prompt_history_share,
                     help="share of image-posting users with a Civitai-like prompt history in OUT/zipbench (0..1)")
    gen.add_argument("--taste-aligned-share", type=float, default=WorldConfig.taste_aligned_share,
                     help="share of a user's community activity in the community nearest their personal taste (0..1)")
    gen.add_argument("--phrasebook", default=WorldConfig.phrasebook,
                     help=f"the words the world writes in: {', '.join(available())}, or a path to a phrasebook YAML "
                          "(docs/phrasebooks.md); only the words change, never the planted truth")
    gen.add_argument("--no-images", action="store_true", help="skip rendering images (benchmarks)")
    gen.add_argument("--dump-style", choices=["auto", "pushshift", "arctic_shift"], default="auto")
    args = parser.parse_args(argv)
    try:
        config = WorldConfig(
            users=args.users,
            months=parse_month_range(args.months),
            seed=args.seed,
            communities=args.communities,
            comments_per_user_month=args.comments_per_user,
            submissions_per_user_month=args.submissions_per_user,
            malformed_rate=args.malformed_rate,
            personal_share=args.personal_share,
            prompt_history_share=args.prompt_history_share,
            phrasebook=args.phrasebook,
            taste_aligned_share=args.taste_aligned_share,
            write_images=not args.no_images,
            dump_style=args.dump_style,
        )
    except ValueError as exc:
        parser.error(str(exc))
    truth = args.truth or args.out.parent / "truth"
    generate_world(config, args.out, truth, progress=lambda line: print(line, flush=True))
    # The marker that lets the public demo pseudonym key run on these dumps (and on nothing else).
    mark_synthetic_world(args.out / "reddit", generator="zipp_assets.simworld CLI")
    print(f"dumps in {args.out / 'reddit'}, truth in {truth}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
