"""The demo: generate the synthetic world, materialize every asset, say where results are.

    python -m zipp_assets.demo [--months 2019-01:2019-03] [--users 2000] [--seed 0] [--phrasebook forum_us]
    python -m zipp_assets.demo --llm-model data/models/smollm2-135m-instruct --llm-python .vllm-venv/bin/python \
        [--benchmark-users 40] [--prompts-per-user 2] [--injection-share 0.2]      (`make demo-llm`)

The world speaks the words of one phrasebook (`zipp_assets/simworld/phrasebooks/`); to compare
phrasebooks, run the demo once per phrasebook into its own data folder (ZIPP_DATA_DIR) and put the
runs side by side with `python -m zipp_assets.results --compare DIR...`.

Assets are materialized with the same `dg launch` commands the README gives, into the persistent
instance in $DAGSTER_HOME, so the runs show up in the UI (`make ui`).

Offline (the default) every persona and rewrite comes from template rules. With `--llm-model`, a
real model writes them: the demo starts one vLLM server (`managed_vllm_server`, the code path of the
`llm` resource's managed server) serving that folder from the interpreter `--llm-python` once the
encoder is trained, passes it to every LLM step as the `llm` resource's run config (backend `vllm`,
its URL, the served model's name, which the UI and the report show), and stops it when the
rewrites are written, also when a step fails. Give such a run a data folder of its own
(ZIPP_DATA_DIR; `make demo-llm` does) so that it and the template run can be compared side by side.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from zipp_assets import lake
from zipp_assets.llm.vllm_server import VLLMServerConfig, managed_vllm_server
from zipp_assets.personas.shards import SHARD_KEYS
from zipp_assets.results import write_run_record
from zipp_assets.reddit.synthetic import mark_synthetic_world, not_synthetic_because
from zipp_assets.settings import load_settings
from zipp_assets.zipbench.assets import benchmark_partitions
from zipp_assets.simworld.world import WORLD_VERSION, WorldConfig, generate_world, parse_month_range

# Asset groups in dependency order: monthly ones are materialized over the demo's months.
MONTHLY_GROUPS = ["reddit"]
GLOBAL_GROUPS = ["graph", "encoder"]
SHARDED_ASSETS = "persona_evidence,personas"  # over every user shard, in one run
SUMMARY_ASSETS = "persona_fidelity"
# The persona release: candidate, audit (blocks a risky release), release. The ZIPBench release needs the
# benchmark's tables, so it is its own step after the summary (the audit runs again there, on both candidates).
PRIVACY_ASSETS = "persona_release_candidate,privacy_audit,persona_release"
ZIPBENCH_RELEASE = "zipbench_release_candidate,privacy_audit,zipbench_release"
# ZIPBench: build, then every method x shard in one single-run range, then scores, summary and report.
BENCHMARK_BUILD = "zipbench_users,zipbench_prompts"
BENCHMARK_PARTITIONED = "zipbench_rewrites,zipbench_images"
BENCHMARK_SUMMARY = "zipbench_scores,zipbench_human_agreement,zipbench_summary,zipbench_report"
# Assets no later step reads, which a run comparing something else may leave out (the group each is in).
SKIPPABLE = {"encoder_evaluation": "the encoder's ablation table, most of the demo's time; personas and ZIPBench "
                                   "use persona_encoder, not this"}
ASSET_GROUPS = {"encoder_evaluation": "encoder"}
DEMO_BENCHMARK_USERS = 300  # "a few hundred in the demo"; production's default is the paper's 1,500
INJECTION_ASSETS = "persona_injection"  # only where the world planted injected comments
# The CPU vLLM of `make test-vllm` (CHECKED.md): a KV cache of 2 GiB, no usage reports, nothing downloaded.
VLLM_ENV = {"VLLM_CPU_KVCACHE_SPACE": "2", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1"}
LLM_MAX_MODEL_LEN = 4096  # evidence (its budget) + instructions and schema + a persona's 1,024 tokens
LLM_EVIDENCE_TOKENS = 1024
LLM_CONCURRENCY = 64  # requests in flight: what the CPU server batches best (bench/README.md)


def ensure_world(months: tuple[str, ...], users: int, seed: int, phrasebook: str = WorldConfig.phrasebook,
                 injection_share: float = 0.0) -> dict:
    """The demo's world in the data folder (generated unless the same one is there); returns what it is."""
    settings = load_settings()
    stamp = settings.raw_dir / "simworld.json"
    wanted = {"months": list(months), "users": users, "seed": seed, "world_version": WORLD_VERSION,
              "phrasebook": phrasebook}
    if injection_share:
        wanted["injection_share"] = injection_share
    if stamp.exists() and json.loads(stamp.read_text()) == wanted and not not_synthetic_because(settings.reddit_raw_dir):
        print(f"synthetic world already in {settings.raw_dir} ({users} users, {months[0]}..{months[-1]})")
        return wanted
    print(f"generating the synthetic world into {settings.raw_dir} ...", flush=True)
    config = WorldConfig(users=users, months=months, seed=seed, phrasebook=phrasebook, injection_share=injection_share)
    generate_world(config, settings.raw_dir, settings.truth_dir, progress=lambda line: print("  " + line, flush=True))
    mark_synthetic_world(settings.reddit_raw_dir, generator="zipp_assets.simworld via zipp_assets.demo")  # allows the demo key
    stamp.write_text(json.dumps(wanted))
    return wanted


def group_selection(group: str, skip: list[str]) -> str:
    """A group's assets, less those asked to be skipped that are in it (Dagster's selection syntax)."""
    return " and ".join([f"group:{group}", *(f"not key:{key}" for key in skip if ASSET_GROUPS.get(key) == group)])


def launch_command(selection: str, partition_range: str | None, config: dict | None = None) -> list[str]:
    """`dg launch` (dagster-dg-cli) run by this interpreter, so the demo needs no `dg` on PATH."""
    command = [sys.executable, "-m", "dagster_dg_cli.cli", "launch", "--assets", selection]
    if partition_range:
        command += ["--partition-range", partition_range]
    if config:
        command += ["--config-json", json.dumps(config)]
    return [*command, "-m", "zipp_assets.definitions"]


def llm_server_config(model_dir: str, python: str, log_dir: Path) -> VLLMServerConfig:
    """The vLLM server of an LLM demo: the model folder served under its folder's name."""
    return VLLMServerConfig(model=str(Path(model_dir).resolve()), python=python, served_model_name=Path(model_dir).name,
                            max_model_len=LLM_MAX_MODEL_LEN, dtype="bfloat16", env=dict(VLLM_ENV),
                            startup_timeout_s=1800.0, log_dir=str(log_dir))


def llm_run_config(base_url: str, model: str, config: dict | None = None) -> dict:
    """`config` (a run config) with the `llm` resource pointed at a running server: every LLM step of
    the run sends its requests there, and its metadata names `vllm:<model>`."""
    merged = json.loads(json.dumps(config or {}))
    merged.setdefault("resources", {})["llm"] = {"config": {
        "backend": "vllm", "base_url": base_url, "model": model, "served_model_name": model,
        "concurrency": LLM_CONCURRENCY, "timeout_s": 1800.0, "retries": 1}}
    return merged


def materialize(selection: str, partition_range: str | None, config: dict | None = None,
                llm: tuple[str, str] | None = None) -> None:
    """`llm`: (base URL, model) of a running server for the run's `llm` resource; None keeps the template."""
    if llm is not None:
        config = llm_run_config(*llm, config)
    command = launch_command(selection, partition_range, config)
    print("$ dg " + " ".join(command[3:]), flush=True)
    subprocess.run(command, check=True)


def summary() -> list[dict]:
    """Tables in the lake with their current version, partitions, rows and bytes."""
    settings = load_settings()
    rows = []
    for name in lake.list_tables(settings.lake_dir):
        table = lake.open_table(settings.lake_dir, name)
        partitions = sorted("/".join(f"{k}={v}" for k, v in sorted(p.items())) for p in table.partitions())
        count, size = table.size()
        rows.append(
            {
                "dataset": name,
                "version": table.version,
                "partitions": (
                    "-" if not partitions
                    else partitions[0] if len(partitions) == 1
                    else f"{partitions[0]}..{partitions[-1]} ({len(partitions)})"
                ),
                "rows": count,
                "MB": round(size / 1e6, 2),
            }
        )
    return rows


def print_summary() -> None:
    settings = load_settings()
    print(f"\nlake: {settings.lake_dir}")
    for row in summary():
        print(f"  {row['dataset']:30s} v{row['version']:<4} {row['partitions']:40s} {row['rows']:>10,} rows {row['MB']:>8} MB")
    print(f"planted truth (evaluation only): {settings.truth_dir}")
    print(f"Dagster instance: {os.environ.get('DAGSTER_HOME', '(DAGSTER_HOME unset)')}; browse it with `make ui`")


def set_aside_pre_delta_lake() -> None:
    """A lake from before the Delta lake (Parquet folders without a Delta log) cannot be written to:
    move it aside, the demo rebuilds the lake from the world."""
    folder = load_settings().lake_dir
    if isinstance(folder, Path) and lake.legacy_tables(folder):
        aside = folder.with_name(f"{folder.name}.pre-delta-{time.strftime('%Y%m%dT%H%M%S')}")
        folder.rename(aside)
        print(f"moved the pre-Delta lake aside to {aside}; the demo rebuilds the lake", flush=True)


def _exit_on_sigterm(signum, _frame) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zipp_assets.demo", description=__doc__)
    parser.add_argument("--months", default="2019-01:2019-03")
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--phrasebook", default=WorldConfig.phrasebook,
                        help="the words the world speaks: a phrasebook's name or a YAML file (default: %(default)s)")
    parser.add_argument("--skip", action="append", default=[], choices=sorted(SKIPPABLE),
                        help="leave out an asset nothing else in the demo needs (repeatable): "
                             + "; ".join(f"{k}: {v}" for k, v in SKIPPABLE.items()))
    parser.add_argument("--benchmark-users", type=int, default=DEMO_BENCHMARK_USERS)
    parser.add_argument("--prompts-per-user", type=int, default=8)
    parser.add_argument("--fidelity-users", type=int, default=2000, help="users scored for persona fidelity")
    parser.add_argument("--injection-share", type=float, default=0.0,
                        help="share of users whose comments carry prompt injections (simworld; 0: none)")
    parser.add_argument("--llm-model", help="a model folder to serve with vLLM for personas and rewrites "
                                            "(default: the offline template rules)")
    parser.add_argument("--llm-python", default="python", help="the interpreter of the environment vLLM is in")
    args = parser.parse_args(argv)
    # `kill` (SIGTERM) unwinds like Ctrl-C: the managed vLLM server and the running `dg launch` are
    # stopped by their context managers instead of being left running without the demo.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    started = datetime.now(timezone.utc)
    months = parse_month_range(args.months)
    try:  # a bad phrasebook or knob is refused here, before anything runs
        WorldConfig(users=args.users, months=months, seed=args.seed, phrasebook=args.phrasebook,
                    injection_share=args.injection_share)
    except ValueError as error:
        parser.error(str(error))
    world = ensure_world(months, args.users, args.seed, args.phrasebook, args.injection_share)
    set_aside_pre_delta_lake()
    for group in MONTHLY_GROUPS:
        materialize(f"group:{group}", f"{months[0]}...{months[-1]}")
    for group in GLOBAL_GROUPS:
        materialize(group_selection(group, args.skip), None)
    settings = load_settings()
    with contextlib.ExitStack() as stack:
        llm = None
        if args.llm_model:
            print(f"starting vLLM serving {args.llm_model} (minutes on a busy CPU) ...", flush=True)
            server = stack.enter_context(managed_vllm_server(
                llm_server_config(args.llm_model, args.llm_python, settings.data_dir / "logs")))
            print(f"vLLM ready at {server.base_url} serving {server.model}; log {server.log_path}", flush=True)
            llm = (server.base_url, server.model)
        evidence = {"ops": {"persona_evidence": {"config": {"token_budget": LLM_EVIDENCE_TOKENS}}}} if llm else None
        materialize(SHARDED_ASSETS, f"{SHARD_KEYS[0]}...{SHARD_KEYS[-1]}", evidence, llm)
        materialize(SUMMARY_ASSETS, None, {"ops": {"persona_fidelity": {"config": {"max_users": args.fidelity_users}}}},
                    llm)
        if args.injection_share:
            materialize(INJECTION_ASSETS, None, None, llm)
        materialize(PRIVACY_ASSETS, None)
        materialize(BENCHMARK_BUILD, None, {"ops": {"zipbench_users": {"config": {"n_users": args.benchmark_users}},
                                                    "zipbench_prompts": {"config": {
                                                        "prompts_per_user": args.prompts_per_user}}}})
        keys = benchmark_partitions.get_partition_keys()
        materialize(BENCHMARK_PARTITIONED, f"{keys[0]}...{keys[-1]}", None, llm)
    # The server is stopped; the remaining steps only name the model (the report's components).
    materialize(BENCHMARK_SUMMARY, None, None, llm)
    materialize(ZIPBENCH_RELEASE, None)
    record = write_run_record(load_settings().data_dir, world, started,
                              "python -m zipp_assets.demo " + " ".join(argv if argv is not None else sys.argv[1:]))
    print_summary()
    print(f"run record (commit, world, times; read by `python -m zipp_assets.results`): {record}")
    print(f"ZIPBench report (open in a browser): {load_settings().data_dir / 'zipbench' / 'report' / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
