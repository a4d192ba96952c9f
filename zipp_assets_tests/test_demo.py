"""The demo's wiring: the world in the phrasebook asked for, assets skipped on request, and with a model
folder one vLLM server serving every LLM step of the run, named in its config."""

import contextlib
import json
import os
import signal
from types import SimpleNamespace

import pytest

from zipp_assets import demo
from zipp_assets.settings import load_settings
from zipp_assets.simworld.world import WORLD_VERSION

REAL_RUN = demo.subprocess.run


@pytest.fixture(autouse=True)
def _keep_the_sigterm_handler():
    """demo.main installs a SIGTERM handler; the test process keeps its own."""
    previous = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, previous)


def recording(launched):
    """subprocess.run that records `dg launch` commands instead of running them (git still runs)."""
    def run(command, *args, **kwargs):
        if "dagster_dg_cli.cli" in command:
            launched.append(command)
            return None
        return REAL_RUN(command, *args, **kwargs)
    return run


def test_the_llm_run_config_points_the_llm_resource_at_the_server_and_keeps_op_config():
    ops = {"ops": {"persona_fidelity": {"config": {"max_users": 100}}}}
    config = demo.llm_run_config("http://127.0.0.1:9", "smollm2-135m-instruct", ops)
    assert config["ops"] == ops["ops"] and "resources" not in ops  # the caller's config is not changed
    llm = config["resources"]["llm"]["config"]
    assert (llm["backend"], llm["base_url"], llm["model"]) == ("vllm", "http://127.0.0.1:9", "smollm2-135m-instruct")
    command = demo.launch_command("personas", "0...f", config)
    assert json.loads(command[command.index("--config-json") + 1]) == config


def test_an_llm_demo_starts_one_server_for_the_llm_steps_and_stops_it_before_the_summary(monkeypatch, tmp_path):
    launched, events = [], []
    monkeypatch.setenv("ZIPP_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(demo, "ensure_world", lambda months, users, seed, phrasebook, share: {
        "months": list(months), "users": users, "seed": seed, "injection_share": share})
    monkeypatch.setattr(demo, "print_summary", lambda: None)
    monkeypatch.setattr(demo.subprocess, "run", recording(launched))

    @contextlib.contextmanager
    def fake_server(config):
        events.append(("start", config))
        yield SimpleNamespace(base_url="http://127.0.0.1:9", model=config.name, log_path=tmp_path / "log")
        events.append(("stop", len(launched)))

    monkeypatch.setattr(demo, "managed_vllm_server", fake_server)
    model_dir = tmp_path / "smollm2-135m-instruct"
    model_dir.mkdir()
    assert demo.main(["--months", "2019-01:2019-02", "--users", "50", "--benchmark-users", "10", "--prompts-per-user",
                      "2", "--injection-share", "0.2", "--llm-model", str(model_dir), "--llm-python", "/venv/python"]) == 0
    (_, server), (_, stopped_after) = events
    assert server.python == "/venv/python" and server.served_model_name == "smollm2-135m-instruct"
    assert server.max_model_len == demo.LLM_MAX_MODEL_LEN and server.env["VLLM_CPU_KVCACHE_SPACE"] == "2"

    def run_config(command):
        return json.loads(command[command.index("--config-json") + 1]) if "--config-json" in command else {}

    by_selection = {c[c.index("--assets") + 1]: run_config(c) for c in launched}
    for selection in (demo.SHARDED_ASSETS, demo.SUMMARY_ASSETS, demo.INJECTION_ASSETS, demo.BENCHMARK_PARTITIONED,
                      demo.BENCHMARK_SUMMARY):
        assert by_selection[selection]["resources"]["llm"]["config"]["model"] == "smollm2-135m-instruct", selection
    assert "resources" not in by_selection["group:encoder"] and "resources" not in by_selection[demo.PRIVACY_ASSETS]
    assert by_selection[demo.BENCHMARK_BUILD]["ops"]["zipbench_users"]["config"]["n_users"] == 10
    assert by_selection[demo.BENCHMARK_BUILD]["ops"]["zipbench_prompts"]["config"]["prompts_per_user"] == 2
    # the server is stopped once the rewrites are written, before the scores and the report
    selections = [c[c.index("--assets") + 1] for c in launched]
    assert stopped_after == selections.index(demo.BENCHMARK_SUMMARY)
    assert json.loads((tmp_path / "run.json").read_text())["world"]["injection_share"] == 0.2


def test_the_template_demo_starts_no_server_and_sends_no_resource_config(monkeypatch, tmp_path):
    launched = []
    monkeypatch.setenv("ZIPP_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(demo, "ensure_world", lambda *a: {"users": 50})
    monkeypatch.setattr(demo, "print_summary", lambda: None)
    monkeypatch.setattr(demo.subprocess, "run", recording(launched))
    monkeypatch.setattr(demo, "managed_vllm_server", None)  # would raise if called
    assert demo.main(["--users", "50"]) == 0
    assert not any("resources" in c[c.index("--config-json") + 1] for c in launched if "--config-json" in c)
    assert not any(demo.INJECTION_ASSETS in c for c in launched)


def test_the_world_speaks_the_phrasebook_asked_for_and_a_new_one_regenerates_it(tmp_path, monkeypatch):
    monkeypatch.setenv("ZIPP_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("ZIPP_LAKE_URI", raising=False)
    generated = []
    real_generate = demo.generate_world
    monkeypatch.setattr(demo, "generate_world", lambda config, *a, **k: (generated.append(config.phrasebook),
                                                                         real_generate(config, *a, **k))[1])
    world = demo.ensure_world(("2019-01",), 30, 1, "trade_notes")
    assert world == {"months": ["2019-01"], "users": 30, "seed": 1, "world_version": WORLD_VERSION,
                     "phrasebook": "trade_notes"}
    stamp = load_settings().raw_dir / "simworld.json"
    assert json.loads(stamp.read_text())["phrasebook"] == "trade_notes"
    demo.ensure_world(("2019-01",), 30, 1, "trade_notes")  # the same world: kept
    demo.ensure_world(("2019-01",), 30, 1, "british_chat")  # other words: generated again
    assert generated == ["trade_notes", "british_chat"]


def test_an_unknown_phrasebook_is_refused_before_anything_runs(capsys, monkeypatch):
    monkeypatch.setattr(demo, "ensure_world", None)  # would raise TypeError if reached
    with pytest.raises(SystemExit):
        demo.main(["--phrasebook", "klingon", "--users", "10"])
    err = capsys.readouterr().err
    assert "no phrasebook at" in err and "klingon.yaml" in err and "forum_us" in err  # names the shipped ones


def test_a_skipped_asset_is_left_out_of_its_group_only_and_the_selection_resolves():
    import dagster as dg

    from zipp_assets.definitions import defs

    assert demo.group_selection("graph", ["encoder_evaluation"]) == "group:graph"
    selection = demo.group_selection("encoder", ["encoder_evaluation"])
    assert selection == "group:encoder and not key:encoder_evaluation"
    keys = {k.to_user_string() for k in dg.AssetSelection.from_string(selection).resolve(defs.resolve_asset_graph())}
    everything = {k.to_user_string() for k in dg.AssetSelection.from_string("group:encoder").resolve(defs.resolve_asset_graph())}
    assert everything - keys == {"encoder_evaluation"} and "persona_encoder" in keys


def test_only_assets_nothing_downstream_reads_may_be_skipped():
    from zipp_assets.definitions import defs

    graph = defs.resolve_asset_graph()
    for key in demo.SKIPPABLE:
        assert not graph.get(dg_key(key)).child_keys, key  # nothing in the pipeline reads it


def dg_key(name):
    import dagster as dg

    return dg.AssetKey(name)


def test_a_killed_llm_demo_stops_its_server(monkeypatch, tmp_path):
    """`kill` of the demo (SIGTERM) while a step runs: the server is stopped, not left running without it."""
    events = []
    monkeypatch.setenv("ZIPP_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(demo, "ensure_world", lambda *a: {"months": ["2019-01"], "users": 5})
    monkeypatch.setattr(demo, "print_summary", lambda: None)

    def run(command, *args, **kwargs):
        if "dagster_dg_cli.cli" not in command:
            return REAL_RUN(command, *args, **kwargs)
        if demo.SHARDED_ASSETS in command:  # the personas step is running when the kill comes
            os.kill(os.getpid(), signal.SIGTERM)
        return None

    monkeypatch.setattr(demo.subprocess, "run", run)

    @contextlib.contextmanager
    def fake_server(config):
        events.append("start")
        try:
            yield SimpleNamespace(base_url="http://127.0.0.1:9", model=config.name, log_path=tmp_path / "log")
        finally:
            events.append("stop")

    monkeypatch.setattr(demo, "managed_vllm_server", fake_server)
    (tmp_path / "m").mkdir()
    with pytest.raises(SystemExit) as exited:
        demo.main(["--months", "2019-01", "--users", "5", "--llm-model", str(tmp_path / "m")])
    assert exited.value.code == 128 + signal.SIGTERM and events == ["start", "stop"]
