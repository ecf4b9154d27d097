"""``envoi -c FILE``: Envoy's command line, for the options envoi implements."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from collections.abc import Sequence

from envoi import __version__
from envoi.config import ConfigError
from envoi.event_loop import new_event_loop
from envoi.plugins import PluginError, Plugins
from envoi.server import Options, Server

LOG_LEVELS = {
    "trace": logging.DEBUG,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
    "off": logging.CRITICAL + 10,
}


class _EnvoyFormatter(logging.Formatter):
    """Envoy's default log line: ``[2026-11-24 10:00:00.123][1234][info][main] message``."""

    def format(self, record: logging.LogRecord) -> str:
        t = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created))
        level = {"WARNING": "warning", "CRITICAL": "critical"}.get(
            record.levelname, record.levelname.lower()
        )
        component = record.name.split(".", 1)[-1] if "." in record.name else "main"
        msg = record.getMessage()
        if record.exc_info:
            msg += "\n" + self.formatException(record.exc_info)
        return f"[{t}.{int(record.msecs):03d}][{os.getpid()}][{level}][{component}] {msg}"


def build_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="envoi",
        add_help=add_help,
        description="An Envoy-style L4/L7 proxy whose filters are Python plugins.",
    )
    p.add_argument("-c", "--config-path", help="path to an Envoy v3 bootstrap (YAML or JSON)")
    p.add_argument("--mode", choices=["serve", "validate"], default="serve",
                   help="serve (default), or validate the config and exit 0/1 as Envoy does")
    p.add_argument("-l", "--log-level", default="info", choices=sorted(LOG_LEVELS),
                   help="log level (default info)")
    p.add_argument("--drain-time-s", type=float, default=600.0,
                   help="on SIGTERM/SIGINT, how long open connections get to finish (600)")
    p.add_argument("--concurrency", type=int, default=1,
                   help="worker processes, each with its own event loop and a SO_REUSEPORT "
                        "socket per listener; the main process keeps the admin (default 1: "
                        "a single process)")
    p.add_argument("--base-id", help="accepted for Envoy compatibility; ignored")
    p.add_argument("--disable-hot-restart", action="store_true",
                   help="accepted for Envoy compatibility; envoi has no hot restart")
    p.add_argument("--admin-port", type=int, default=None,
                   help="override admin.address port (0 picks a free port; see the log)")
    p.add_argument("-p", dest="plugins", action="append", default=[], metavar="NAME",
                   help="load plugin module NAME, or block plugin NAME with no:NAME")
    p.add_argument("--disable-plugin-autoload", action="store_true",
                   help="do not load plugins from the 'envoi' entry-point group "
                        "(also ENVOI_DISABLE_PLUGIN_AUTOLOAD=1)")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    return p


def _setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_EnvoyFormatter())
    for name in ("envoi", "asyncio"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(LOG_LEVELS[level])
        logger.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    # Plugins may add options, so they are loaded before the command line is parsed; the
    # plugin switches themselves are read first (pytest does the same with -p).
    pre, _ = build_parser(add_help=False).parse_known_args(argv)  # -h waits for the plugins
    try:
        plugins = Plugins(
            autoload=False if pre.disable_plugin_autoload else None,
            blocked=[p[3:] for p in pre.plugins if p.startswith("no:")],
            extra=[p for p in pre.plugins if not p.startswith("no:")],
        )
    except PluginError as exc:
        print(f"envoi: {exc}", file=sys.stderr)
        return 1
    plugins.pm.hook.envoi_addoption(parser=parser)
    args = parser.parse_args(argv)
    if args.version:
        print(f"envoi version: {__version__}/Python/{sys.version.split()[0]}")
        return 0
    if not args.config_path:
        print("envoi: error: a config file is required (-c FILE)", file=sys.stderr)
        return 1
    _setup_logging(args.log_level)
    logging.getLogger("envoi")
    if args.concurrency < 1:
        print("envoi: error: --concurrency must be at least 1", file=sys.stderr)
        return 1
    options = Options(
        config_path=args.config_path,
        mode=args.mode,
        log_level=args.log_level,
        drain_time_s=args.drain_time_s,
        concurrency=args.concurrency,
        admin_port_override=args.admin_port,
        blocked_plugins=[p[3:] for p in args.plugins if p.startswith("no:")],
        extra_plugins=[p for p in args.plugins if not p.startswith("no:")],
        autoload=False if args.disable_plugin_autoload else None,
        plugin_options=args,
    )
    try:
        server = Server(options, plugins)
        server.load()
    except (ConfigError, PluginError) as exc:
        print(f"error initializing configuration '{args.config_path}':", file=sys.stderr)
        print(str(exc), file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error reading configuration '{args.config_path}': {exc}", file=sys.stderr)
        return 1
    if args.mode == "validate":
        print(f"configuration '{args.config_path}' OK")
        return 0
    try:
        server.bind()
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    pool = None
    if args.concurrency > 1:
        from envoi.workers import WorkerPool

        # Fork before any event loop exists: a loop does not survive a fork.
        pool = WorkerPool(server, args.concurrency)
        pool.fork()
    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        if pool is not None:
            return loop.run_until_complete(server.serve_main(pool))
        return loop.run_until_complete(_serve(server))
    except OSError as exc:  # the admin port in use, for one
        print(f"envoi: {exc}", file=sys.stderr)
        return 1
    finally:
        loop.close()


async def _serve(server: Server) -> int:
    return await server.serve()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
