"""`llmgw-sidecar` (also `python -m llmgw_sidecar`): serve, check-config, export-model, cache."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import sys
from pathlib import Path

from . import __version__
from .config import Config, ConfigError, load_config

EXIT_CONFIG = 2


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    from .redact import install_log_filter

    install_log_filter()  # configured credentials never appear in a log line (redact.py)


def _load(path: str) -> Config:
    try:
        cfg = load_config(path)
    except ConfigError as e:
        print(f"llmgw-sidecar: {e}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None
    from .redact import REDACTOR

    REDACTOR.add_config(cfg)
    return cfg


def serve(args: argparse.Namespace) -> int:
    cfg = _load(args.config)
    if args.host or args.port:
        listen = cfg.listen.model_copy(update={"host": args.host or cfg.listen.host,
                                               "port": args.port or cfg.listen.port})
        cfg = cfg.model_copy(update={"listen": listen})
    from . import startup

    # Checked before the model loads and Redis is dialled: a busy port is one line, not a traceback seconds later.
    for host, port in [(cfg.listen.host, cfg.listen.port), (cfg.metrics.host, cfg.metrics.port)]:
        problem = port is not None and startup.port_problem(host, port)
        if problem:
            print(f"llmgw-sidecar: {problem}", file=sys.stderr)
            return EXIT_CONFIG
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:  # uvloop is optional (not on Windows); asyncio's loop works, slower
        pass
    from aiohttp import web

    from .app import RUNTIME, create_app

    try:
        app = create_app(cfg, config_path=Path(args.config))
    except ConfigError as e:
        print(f"llmgw-sidecar: {e}", file=sys.stderr)
        return EXIT_CONFIG

    def ready(_: str) -> None:  # aiohttp calls this once every listener is bound
        logging.getLogger("llmgw").info("%s", startup.summary(cfg, app[RUNTIME].current.semantic))
        # What start-up built (model, clients, schemas) lives until exit: keep it out of every later collection, or
        # the interpreter's final one alone makes Ctrl-C take a second.
        gc.freeze()

    try:
        web.run_app(app, host=cfg.listen.host, port=cfg.listen.port, access_log=None, print=ready,
                    handle_signals=True, shutdown_timeout=10)
    except OSError as e:  # lost a race for the port after the check above
        print(f"llmgw-sidecar: {startup.bind_error(cfg.listen.host, cfg.listen.port, e)}", file=sys.stderr)
        return EXIT_CONFIG
    return 0


def check_config(args: argparse.Namespace) -> int:
    cfg = _load(args.config)
    print(f"{args.config}: ok ({len(cfg.models)} model(s): {', '.join(m.name for m in cfg.models)})")
    return 0


def convert_litellm(args: argparse.Namespace) -> int:
    from .litellm_config import convert_file

    try:
        sys.stdout.write(convert_file(args.config))
    except ConfigError as e:
        print(f"llmgw-sidecar: {e}", file=sys.stderr)
        return EXIT_CONFIG
    return 0


def export_model(args: argparse.Namespace) -> int:
    from .embeddings.export import main as export_main

    return export_main(args.rest)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="llmgw-sidecar", description="OpenAI-compatible caching LLM gateway sidecar.",
        epilog="Run `llmgw-sidecar COMMAND --help` for the options of a command. Exit code 2 means a configuration or "
               "start-up mistake (the reason is one line on stderr).")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                   help="log verbosity (default: %(default)s)")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    s = sub.add_parser("serve", help="run the gateway",
                       description="Run the gateway: the OpenAI API on listen.host:listen.port, /healthz, /readyz, "
                                   "/metrics, /spend. Logs one summary line when it is ready; Ctrl-C or SIGTERM stops "
                                   "it gracefully.")
    s.add_argument("--config", "-c", required=True, help="YAML configuration file (reloaded when it changes)")
    s.add_argument("--host", help="override listen.host")
    s.add_argument("--port", type=int, help="override listen.port")
    s.set_defaults(fn=serve)
    c = sub.add_parser("check-config", help="validate a configuration file and exit (code 2 when invalid)",
                       description="Validate a configuration file (os.environ/NAME references are resolved from the "
                                   "environment) and print its models; exit code 2 and the reasons when invalid.")
    c.add_argument("config", help="YAML configuration file")
    c.set_defaults(fn=check_config)
    lc = sub.add_parser("convert-litellm", help="print a LiteLLM proxy config as a native config, with comments")
    lc.add_argument("config", help="LiteLLM proxy config.yaml (model_list, litellm_settings, ...)")
    lc.set_defaults(fn=convert_litellm)
    e = sub.add_parser("export-model", help="convert a sentence-transformers model to ONNX (once, offline)",
                       description="Convert a sentence-transformers model to the ONNX folder the local semantic cache "
                                   "loads. Needs the export extra (torch); run `llmgw-sidecar export-model --help` for "
                                   "its options.", add_help=False)
    e.add_argument("rest", nargs=argparse.REMAINDER)
    e.set_defaults(fn=export_model)
    from .cache.cli import add_parser as add_cache_parser

    add_cache_parser(sub, _load)
    args, extra = p.parse_known_args(argv)
    if args.cmd == "export-model":
        # argparse does not put leading options ("--out X") of a subcommand into REMAINDER: hand them over here.
        args.rest = [*extra, *args.rest]
    elif extra:
        p.error(f"unrecognized arguments: {' '.join(extra)}")
    _setup_logging(args.log_level)
    code: int = args.fn(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
