"""Serve the persona studio over the lake of ZIPP_DATA_DIR (the demo lake by default), or manage its editors.

    python -m zipp_assets.studio                      # http://127.0.0.1:8040
    python -m zipp_assets.studio --prompts 10 --baseline llm_rewrite
    python -m zipp_assets.studio editors add NAME     # prints NAME's editor token, once
    python -m zipp_assets.studio editors rotate NAME | revoke NAME | list

Loopback only unless --public is given. Public means people other than the researchers reach it (bound
to a network, or on loopback behind a proxy): it then needs TLS (--behind-tls-proxy, or
--ssl-certfile and --ssl-keyfile) and the names it is reached by (--allowed-host, nothing else is
accepted as Host), starts study sessions only from invitation links, and shows personas to editors only.
Editing personas needs an editor account (`editors add`). Models come from the profile (ZIPP_PROFILE):
the demo's template LLM and offline renderer, or, in production, an OpenAI-compatible server
(--llm-base-url, --llm-model; key from --llm-api-key-env) and the diffusers generator named by
ZIPP_DIFFUSION_MODEL.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
import sys

from zipp_assets.settings import load_settings
from zipp_assets.studio.access import EDITORS_FILE, EditorRegistry
from zipp_assets.studio.security import SESSION_LIMIT, SIGN_IN_LIMIT, Limit
from zipp_assets.studio.service import LOOPBACK_HOSTS, StudioSettings
from zipp_assets.studio.study import BASELINES, DEFAULT_PROMPTS, StudyConfig

DEFAULT_PORT = 8040
HOST_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,62})(\.[a-z0-9]([a-z0-9-]{0,62}))*$")
RETIRED_TOKEN_ENV = "ZIPP_STUDIO_EDITOR_TOKEN"  # the one shared token of old; editors now have accounts


class Refused(ValueError):
    """A command line the studio will not serve with; the message says what to change."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _limit(text: str) -> Limit:
    try:
        return Limit.parse(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _limit_text(limit: Limit) -> str:
    return f"{limit.per_client}/{limit.overall}/{limit.window_s:g}"


def serve_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m zipp_assets.studio", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1", help="the address to bind")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--public", action="store_true",
                        help="serve people other than the researchers: invitations, TLS and --allowed-host required")
    parser.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                        help="a name the studio is reached by (the Host header); repeat for several. Public: only "
                             "these; loopback: these besides 127.0.0.1 and localhost")
    parser.add_argument("--behind-tls-proxy", action="store_true",
                        help="a TLS proxy in front: Secure cookies, HSTS, and the proxy's X-Forwarded-For/-Proto "
                             "trusted from --trusted-proxy")
    parser.add_argument("--trusted-proxy", default="127.0.0.1", metavar="ADDRESSES",
                        help="comma-separated addresses of that proxy (default 127.0.0.1)")
    parser.add_argument("--ssl-certfile", default=None, help="serve https directly with this certificate")
    parser.add_argument("--ssl-keyfile", default=None, help="and this key")
    parser.add_argument("--sign-in-limit", type=_limit, default=SIGN_IN_LIMIT, metavar="N/M/S",
                        help=f"wrong editor tokens: N per address and M in all within S seconds "
                             f"(default {_limit_text(SIGN_IN_LIMIT)})")
    parser.add_argument("--session-limit", type=_limit, default=SESSION_LIMIT, metavar="N/M/S",
                        help=f"study sessions started (and invitation links refused): N per address and M in all "
                             f"within S seconds (default {_limit_text(SESSION_LIMIT)})")
    parser.add_argument("--prompts", type=int, default=DEFAULT_PROMPTS, help="comparisons per participant")
    parser.add_argument("--baseline", default="generic", choices=BASELINES)
    parser.add_argument("--llm-base-url", default=None, help="an OpenAI-compatible server (production)")
    parser.add_argument("--llm-model", default="", help="the model name that server serves")
    parser.add_argument("--llm-api-key-env", default=None, help="environment variable holding its API key")
    return parser


def plan_server(args: argparse.Namespace, data_dir) -> tuple[StudioSettings, dict]:
    """The studio's settings and uvicorn's keyword arguments for a command line; Refused if it is unsafe."""
    if not is_loopback(args.host) and not args.public:
        raise Refused(f"refusing to serve on {args.host}: the studio is for loopback; pass --public to serve on a "
                      "network (behind TLS, with --allowed-host)")
    direct_tls = bool(args.ssl_certfile or args.ssl_keyfile)
    if direct_tls and not (args.ssl_certfile and args.ssl_keyfile):
        raise Refused("--ssl-certfile and --ssl-keyfile go together")
    hosts = tuple(dict.fromkeys(h.strip().lower() for h in args.allowed_host))
    for host in hosts:
        if not HOST_NAME.match(host):
            raise Refused(f"--allowed-host takes a host name or IPv4 address, without wildcard or port: got {host!r}")
    if args.public:
        if not hosts:
            raise Refused("--public needs --allowed-host NAME: the names the studio is reached by (the Host "
                          "allow-list; loopback names are not accepted unless named)")
        if not (args.behind_tls_proxy or direct_tls):
            raise Refused("--public needs TLS: --behind-tls-proxy (a TLS proxy in front) or --ssl-certfile and "
                          "--ssl-keyfile")
    else:
        hosts = tuple(dict.fromkeys((*LOOPBACK_HOSTS, *hosts)))
    try:
        study = StudyConfig(n_prompts=args.prompts, baseline=args.baseline)
    except ValueError as error:
        raise Refused(str(error)) from None
    settings = StudioSettings(data_dir, study, allowed_hosts=hosts, public=args.public,
                              secure_cookies=args.behind_tls_proxy or direct_tls, sign_in_limit=args.sign_in_limit,
                              session_limit=args.session_limit)
    # Client addresses (for the rate limits) and the scheme come from the socket, unless a TLS proxy we
    # were told about sends them.
    server = {"host": args.host, "port": args.port, "proxy_headers": args.behind_tls_proxy,
              "forwarded_allow_ips": args.trusted_proxy if args.behind_tls_proxy else "",
              "server_header": False}
    if direct_tls:
        server |= {"ssl_certfile": args.ssl_certfile, "ssl_keyfile": args.ssl_keyfile}
    return settings, server


def serve(argv: list[str]) -> int:
    args = serve_parser().parse_args(argv)
    settings = load_settings()
    try:
        studio_settings, server = plan_server(args, settings.data_dir)
    except Refused as error:
        print(error, file=sys.stderr)
        return 2
    from zipp_assets.imaging.resources import ImageGeneratorResource
    from zipp_assets.llm.resources import LLMResource
    from zipp_assets.studio.service import Studio
    from zipp_assets.studio.web import create_app

    llm = (LLMResource(backend="openai", base_url=args.llm_base_url, model=args.llm_model,
                       api_key_env=args.llm_api_key_env)
           if args.llm_base_url else LLMResource.for_profile(settings.profile))
    studio = Studio(studio_settings, llm, ImageGeneratorResource.for_profile(settings.profile))
    if os.environ.get(RETIRED_TOKEN_ENV):
        print(f"note: {RETIRED_TOKEN_ENV} is no longer read: every editor has an account and a token of their own "
              "(python -m zipp_assets.studio editors add NAME)", file=sys.stderr)
    if not studio.editors.enabled:
        print(f"note: {studio.editors.why_disabled}", file=sys.stderr)
    import uvicorn

    scheme = "https" if "ssl_certfile" in server else "http"
    mode = "public, by invitation" if args.public else "loopback"
    print(f"persona studio on {scheme}://{args.host}:{args.port} over {settings.lake_dir} ({mode}; hosts "
          f"{', '.join(studio_settings.allowed_hosts)})", file=sys.stderr)
    uvicorn.run(create_app(studio), log_level="info", timeout_graceful_shutdown=10, **server)
    return 0


def editors(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m zipp_assets.studio editors",
                                     description="Editor accounts of the studio over ZIPP_DATA_DIR: each editor "
                                                 "signs in with a token of their own; only its hash is stored.")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("add", "a new editor; prints their token once"),
                            ("rotate", "a new token for an editor; the old one and its sessions stop working"),
                            ("revoke", "an editor can no longer sign in; their sessions end; the name stays taken")):
        commands.add_parser(name, help=help_text).add_argument("name")
    commands.add_parser("list", help="the editors, without tokens")
    args = parser.parse_args(argv)
    registry = EditorRegistry(StudioSettings(load_settings().data_dir).studio_dir / EDITORS_FILE)
    try:
        if args.command == "list":
            for editor in registry.listed():
                state = f"revoked {editor['revoked_utc']}" if editor["revoked_utc"] else "active"
                print(f"{editor['name']}\tadded {editor['created_utc']}\t{state}")
            return 0
        if args.command == "revoke":
            registry.revoke(args.name)
            print(f"revoked {args.name}", file=sys.stderr)
            return 0
        token = registry.add(args.name) if args.command == "add" else registry.rotate(args.name)
    except ValueError as error:
        print(error, file=sys.stderr)
        return 2
    print(f"editor token for {args.name} (shown once; give it to them privately):", file=sys.stderr)
    print(token)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["editors"]:
        return editors(argv[1:])
    return serve(argv)


if __name__ == "__main__":
    sys.exit(main())
