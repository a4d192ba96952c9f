"""The fault-injection test's subject: the pipeline's stages (the plain functions the assets wire)
run over one lake, and, when asked, a SIGKILL of this very process at a named point.

    python -m zipp_assets_tests.faults_driver --lake L --raw R --models M --from STAGE [--only] [--kill SPEC]
    python -m zipp_assets_tests.faults_driver --serve     (runs many of the above: see `serve`)

SPEC is `point:n` or `point:dataset:n`: die at the n-th time `point` is reached (counted from the
start of this run; with a dataset, only where that table is written). Points:
    scratch      a row batch written into a partition's local scratch folder (before any commit)
    commit       a Delta commit about to start          committed   a Delta commit just made
    delta        inside delta-rs's write, after it took the first batch (files may be half written)
    encode       a chunk of images about to be embedded (earlier chunks appended)
    batch        a training batch about to be taken (mid-epoch: the epoch's updates are lost)
    epoch        a training epoch just finished, before its state is saved
    state        an epoch's resume state written to its temporary file, before the rename
    save         a checkpoint's weights written into its temporary folder, before the rename
    chunk        an inference chunk of users computed (nothing committed yet)
On a local lake, inside delta-rs's commit (the driver runs with publish_kill_shim.c preloaded):
    publish      a commit's log entry staged (`_delta_log/N.json#k`), about to be published as N.json
    published    the entry published (the commit has taken effect); delta-rs has not returned yet
On a lake in S3 (ZIPP_FAULTS_S3_UPSTREAM names the S3 server; the driver's requests go through a
proxy on loopback that it runs itself), inside delta-rs's own requests:
    s3put        a data file's upload about to reach the store
    s3commit     a commit's log entry (`_delta_log/N.json`) about to reach the store
    s3committed  the store has taken the log entry; delta-rs has not heard back yet
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import sys
from pathlib import Path

os.environ.setdefault("DGLBACKEND", "pytorch")

STAGES = ["ingest", "derived", "graph", "images", "train", "infer"]
MONTHS = ("2017-12", "2018-01")
KEY = b"test-key"
TRAINING = {"hidden": 16, "heads": 2, "fanouts": (5, 5), "batch_size": 64, "epochs": 3, "patience": 10,
            "min_epochs": 1, "negatives": 4, "max_batches_per_epoch": 3, "seed": 5}


class Killer:
    """Kills `target` (this process unless said otherwise) the n-th time its point is reached."""

    def __init__(self, spec: str | None, target: int | None = None):
        parts = spec.split(":") if spec else []
        self.point = parts[0] if parts else None
        self.dataset = parts[1] if len(parts) == 3 else None
        self.n = int(parts[-1]) if parts else 0
        self.count = 0
        self.target = os.getpid() if target is None else target

    def hit(self, point: str, dataset: str | None = None) -> None:
        if point != self.point or (self.dataset is not None and dataset != self.dataset):
            return
        self.count += 1
        if self.count == self.n:
            sys.stdout.flush()
            os.kill(self.target, signal.SIGKILL)
            os._exit(0)  # the S3 proxy, its writer dead (never reached when the target is this process)


def install(killer: Killer) -> None:
    """Wrap the lake's writer and the stages' inner steps so that each named point calls `killer`."""
    import pyarrow as pa

    from zipp_assets import lake
    from zipp_assets.imaging.encoders import PixelStatsEncoder

    commit = lake._commit

    def killable_commit(root, dataset, data, partition, mode, build_id, base, built_from=None):
        killer.hit("commit", dataset)

        def batches():
            taken = 0
            for batch in data:
                if taken == 1:
                    killer.hit("delta", dataset)
                taken += 1
                yield batch
            if taken <= 1:  # a write of one batch (or none): delta-rs asks for the stream's end inside the write
                killer.hit("delta", dataset)

        table = commit(root, dataset, pa.RecordBatchReader.from_batches(data.schema, batches()), partition, mode,
                       build_id, base, built_from)
        killer.hit("committed", dataset)
        return table

    lake._commit = killable_commit
    write = lake.RotatingParquetWriter.write

    def killable_write(self, table):
        killer.hit("scratch")
        write(self, table)

    lake.RotatingParquetWriter.write = killable_write
    encode = PixelStatsEncoder.encode

    def killable_encode(self, images):
        killer.hit("encode")
        return encode(self, images)

    PixelStatsEncoder.encode = killable_encode


def start_s3_proxy(upstream: str, lake_uri: str, kill: str | None) -> tuple[str, int]:
    """A proxy on loopback in front of the S3 server at `upstream`, in a child process (delta-rs holds
    the GIL while it waits on the network, so it cannot run in the writer's). It reaches the s3 kill
    points as the writer's requests pass (dataset: the table a request is for) and then kills the
    writer. Returns its URL and process id."""
    import http.client
    import http.server
    import re
    import threading
    import time
    from urllib.parse import urlsplit

    upstream_parts = urlsplit(upstream)
    lake_path = "/" + lake_uri.removeprefix("s3://").strip("/") + "/"  # path-style: /bucket/prefix/
    log_entry = re.compile(r"/_delta_log/\d+\.json$")
    writer = os.getpid()
    killer = Killer(kill, target=writer)

    class Forward(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            path = self.path.split("?")[0]
            dataset = path.removeprefix(lake_path).split("/")[0] if path.startswith(lake_path) else None
            is_commit = self.command == "PUT" and bool(log_entry.search(path))
            if self.command == "PUT":
                killer.hit("s3commit" if is_commit else "s3put", dataset)
            connection = http.client.HTTPConnection(upstream_parts.hostname, upstream_parts.port, timeout=60)
            connection.request(self.command, self.path, body=body, headers=dict(self.headers.items()))
            response = connection.getresponse()
            data = response.read()
            connection.close()
            if is_commit and response.status < 300:
                killer.hit("s3committed", dataset)
            self.send_response_only(response.status, response.reason)
            for name, value in response.getheaders():
                if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                    self.send_header(name, value)
            # A HEAD answer carries the object's length but no body.
            self.send_header("Content-Length", response.getheader("Content-Length", "0") if self.command == "HEAD"
                             else str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = forward

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Forward)  # listening before the fork
    proxy = os.fork()
    if proxy == 0:
        def end_with_the_writer() -> None:
            while os.getppid() == writer:
                time.sleep(0.2)
            os._exit(0)

        threading.Thread(target=end_with_the_writer, daemon=True).start()
        try:
            server.serve_forever()
        finally:
            os._exit(0)
    server.socket.close()
    return f"http://127.0.0.1:{server.server_address[1]}", proxy


def run(stage: str, lake_dir: Path, raw: Path, models: Path, killer: Killer) -> None:
    if stage == "ingest":
        from zipp_assets.reddit.ingest import ingest_month

        for month in MONTHS:
            for kind in ("comments", "submissions"):
                ingest_month(lake_dir, raw / "reddit", kind, month, block_bytes=1 << 16)
    elif stage == "derived":
        from zipp_assets.reddit.derived import build_image_posts, build_user_subreddit_edges

        for month in MONTHS:
            build_image_posts(lake_dir, month)
            build_user_subreddit_edges(lake_dir, month)
    elif stage == "graph":
        from zipp_assets.graph.tables import build_graph_tables

        build_graph_tables(lake_dir, KEY)
    elif stage == "images":
        from zipp_assets.graph.images import ImageLoader
        from zipp_assets.graph.visual import build_visual_profiles, embed_images
        from zipp_assets.imaging.encoders import PixelStatsEncoder

        cache = raw / "images"
        embed_images(lake_dir, ImageLoader(cache, [cache]), PixelStatsEncoder(), chunk_size=64, load_workers=2)
        build_visual_profiles(lake_dir, PixelStatsEncoder.name, KEY)
    elif stage == "train":
        import torch

        from zipp_assets.encoder import checkpoint
        from zipp_assets.encoder import train as training
        from zipp_assets.encoder.data import load_graph_data
        from zipp_assets.encoder.train import TrainConfig, config_dict, train
        from zipp_assets.imaging.encoders import PixelStatsEncoder

        torch.set_num_threads(1)
        step, save_state = training.optimization_step, torch.save

        def killable_step(*args, **kwargs):
            killer.hit("batch")
            return step(*args, **kwargs)

        def killable_save_state(obj, path, *args, **kwargs):
            save_state(obj, path, *args, **kwargs)
            killer.hit("state")

        training.optimization_step, torch.save = killable_step, killable_save_state
        save_file = checkpoint.save_file

        def killable_save(tensors, path):
            save_file(tensors, path)
            killer.hit("save")

        checkpoint.save_file = killable_save
        config = TrainConfig(**TRAINING)
        data = load_graph_data(lake_dir, PixelStatsEncoder.name)
        version = checkpoint.data_of(data, PixelStatsEncoder.name)
        fingerprint = json.dumps({"config": config_dict(config), "data_version": version}, sort_keys=True)
        resume = models / "persona_encoder" / ".training" / hashlib.sha256(fingerprint.encode()).hexdigest()[:16]

        def progress(message: str) -> None:
            if message.startswith("epoch "):
                killer.hit("epoch")

        result = train(data, config, progress=progress, resume_dir=resume, fingerprint=fingerprint)
        checkpoint.save_checkpoint(models, result.model, config_dict(config), {}, version, data.subreddit_names,
                                   data.normalization, PixelStatsEncoder.name, data.content_versions)
        shutil.rmtree(resume, ignore_errors=True)
    elif stage == "infer":
        import torch

        from zipp_assets.encoder import inference
        from zipp_assets.encoder.checkpoint import (
            check_data_version,
            data_of,
            encoder_for_graph,
            latest_checkpoint,
            load_encoder,
        )
        from zipp_assets.encoder.data import load_graph_data
        from zipp_assets.imaging.encoders import PixelStatsEncoder

        torch.set_num_threads(1)
        chunks = inference.last_layer_users

        def killable_chunks(*args, **kwargs):
            for item in chunks(*args, **kwargs):
                killer.hit("chunk")
                yield item

        inference.last_layer_users = killable_chunks
        trained = load_encoder(latest_checkpoint(models))
        data = load_graph_data(lake_dir, PixelStatsEncoder.name, normalization=trained.normalization)
        check_data_version(trained, data_of(data, PixelStatsEncoder.name), "error", data.content_versions)
        model = encoder_for_graph(trained, data.subreddit_names)
        inference.embed_users_to_lake(model, data.message_graph(), data, lake_dir, batch_size=40, top_k=3,
                                      max_edges=200)  # several groups of users, so chunk:2 exists
    else:
        raise ValueError(f"unknown stage {stage!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lake", required=True, help="a folder, or an s3:// URI")
    parser.add_argument("--raw", type=Path, required=True)
    parser.add_argument("--models", type=Path, required=True)
    parser.add_argument("--from", dest="start", choices=STAGES, default=STAGES[0])
    parser.add_argument("--only", action="store_true", help="run the first stage only")
    parser.add_argument("--kill")
    args = parser.parse_args(argv)
    killer = Killer(args.kill)
    install(killer)
    if args.kill and args.kill.split(":")[0] in ("publish", "published"):
        os.environ["ZIPP_FAULTS_PUBLISH"] = args.kill if args.kill.count(":") == 2 else args.kill.replace(":", "::")
    lake_dir = args.lake if args.lake.startswith("s3://") else Path(args.lake)
    proxy = None
    if os.environ.get("ZIPP_FAULTS_S3_UPSTREAM"):
        os.environ["AWS_ENDPOINT_URL"], proxy = start_s3_proxy(os.environ["ZIPP_FAULTS_S3_UPSTREAM"], args.lake, args.kill)
    stages = STAGES[STAGES.index(args.start):]
    try:
        for stage in stages[:1] if args.only else stages:
            run(stage, lake_dir, args.raw, args.models, killer)
    finally:
        if proxy is not None:
            os.kill(proxy, signal.SIGKILL)
            os.waitpid(proxy, 0)
    if args.kill:
        print(f"kill point {args.kill} was never reached ({killer.count} hits)", file=sys.stderr)
        return 3
    return 0


def serve(requests=sys.stdin, answers=sys.stdout) -> int:
    """Run many driver runs without paying torch's and DGL's import (seconds) in each: import them
    once, then fork a child per request. A request is one JSON line {"argv": [...], "env": {...},
    "log": path}; the child runs `main(argv)` with its output in `log`, and the answer is one JSON
    line {"returncode": ...}, negative for a signal (-9: the kill point was reached)."""
    import dgl  # noqa: F401
    import pyarrow.dataset  # noqa: F401
    import torch  # noqa: F401 (no operation runs here: the children start their own thread pools)

    for line in requests:
        request = json.loads(line)
        answers.flush()
        child = os.fork()
        if child == 0:
            code = 1
            try:
                log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                os.dup2(log, 1)
                os.dup2(log, 2)
                os.environ.update(request.get("env", {}))
                signal.alarm(request.get("timeout", 300))  # a hung run dies (SIGALRM) instead of hanging the test
                code = main(request["argv"])
            except SystemExit as stop:
                code = stop.code if isinstance(stop.code, int) else int(stop.code is not None)
            except BaseException:
                import traceback

                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        _, status = os.waitpid(child, 0)
        answers.write(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}) + "\n")
        answers.flush()
    return 0


if __name__ == "__main__":
    sys.exit(serve() if sys.argv[1:] == ["--serve"] else main())
