"""Serve the persona studio over the lake of ZIPP_DATA_DIR (the demo lake by default).

    python -m zipp_assets.studio                      # http://127.0.0.1:8040
    python -m zipp_assets.studio --prompts 10 --baseline llm_rewrite

Loopback only unless --public is given (then the host name must be named with --host, and it joins
the Host allow-list). Editing personas needs ZIPP_STUDIO_EDITOR_TOKEN (at least 16 characters).
Models come from the profile (ZIPP_PROFILE): the demo's template LLM and offline renderer, or, in
production, an OpenAI-compatible server (--llm-base-url, --llm-model; key from --llm-api-key-env) and
the diffusers generator named by ZIPP_DIFFUSION_MODEL.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys

from zipp_assets.imaging.resources import ImageGeneratorResource
from zipp_assets.llm.resources import LLMResource
from zipp_assets.settings import load_settings
from zipp_assets.studio.security import EDITOR_TOKEN_ENV
from zipp_assets.studio.service import LOOPBACK_HOSTS, Studio, StudioSettings
from zipp_assets.studio.study import BASELINES, DEFAULT_PROMPTS, StudyConfig
from zipp_assets.studio.web import create_app

DEFAULT_PORT = 8040


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zipp_assets.studio", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--public", action="store_true", help="allow a host that is not loopback")
    parser.add_argument("--prompts", type=int, default=DEFAULT_PROMPTS, help="comparisons per participant")
    parser.add_argument("--baseline", default="generic", choices=BASELINES)
    parser.add_argument("--llm-base-url", default=None, help="an OpenAI-compatible server (production)")
    parser.add_argument("--llm-model", default="", help="the model name that server serves")
    parser.add_argument("--llm-api-key-env", default=None, help="environment variable holding its API key")
    args = parser.parse_args(argv)
    if not is_loopback(args.host) and not args.public:
        print(f"refusing to serve on {args.host}: the studio is for loopback; pass --public to serve on a "
              "network (put it behind TLS and a proxy you control)", file=sys.stderr)
        return 2
    settings = load_settings()
    try:
        study = StudyConfig(n_prompts=args.prompts, baseline=args.baseline)
    except ValueError as error:
        print(error, file=sys.stderr)
        return 2
    llm = (LLMResource(backend="openai", base_url=args.llm_base_url, model=args.llm_model,
                       api_key_env=args.llm_api_key_env)
           if args.llm_base_url else LLMResource.for_profile(settings.profile))
    hosts = LOOPBACK_HOSTS if is_loopback(args.host) else (*LOOPBACK_HOSTS, args.host)
    studio = Studio(StudioSettings(settings.data_dir, study, os.environ.get(EDITOR_TOKEN_ENV), hosts), llm,
                    ImageGeneratorResource.for_profile(settings.profile))
    if not studio.editors.enabled:
        print(f"note: {studio.editors.why_disabled}", file=sys.stderr)
    import uvicorn

    print(f"persona studio on http://{args.host}:{args.port} over {settings.lake_dir}", file=sys.stderr)
    uvicorn.run(create_app(studio), host=args.host, port=args.port, log_level="info", timeout_graceful_shutdown=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
