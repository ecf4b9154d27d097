"""``envoi -c FILE``: Envoy's command line, for the options envoi implements."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import Sequence

from envoi import __version__
from envoi.config import ConfigError
from envoi.event_loop import CHOICES, EventLoopError, check_choice, default_choice, new_event_loop
from envoi.log import DEFAULT_FORMAT, LEVELS, LogSetupError, setup_logging
from envoi.plugins import PluginError, Plugins
from envoi.server import Options, Server


def build_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="envoi",
        add_help=add_help,
        description="An Envoy-style L4/L7 proxy whose filters are Python plugins.",
    )
    p.add_argument("-c", "--config-path", default="",
                   help="path to an Envoy v3 bootstrap (YAML or JSON)")
    p.add_argument("--config-yaml", default="",
                   help="inline YAML bootstrap, merged over --config-path's as Envoy merges "
                        "it (fields set here win; lists are appended)")
    p.add_argument("--mode", choices=["serve", "validate"], default="serve",
                   help="serve (default), or validate the config and exit 0/1 as Envoy does")
    p.add_argument("-l", "--log-level", default="info", choices=sorted(LEVELS),
                   help="log level (default info)")
    p.add_argument("--component-log-level", default="",
                   help="comma-separated component:level list, e.g. upstream:debug,http:trace")
    p.add_argument("--log-path", default="", help="write the log to this file (default stderr)")
    p.add_argument("--log-format", default=DEFAULT_FORMAT,
                   help=f"log line format in Envoy's (spdlog's) flags (default {DEFAULT_FORMAT!r})"
                        .replace("%", "%%"))
    p.add_argument("--service-cluster", default="",
                   help="the node's cluster (overrides the bootstrap's node.cluster)")
    p.add_argument("--service-node", default="",
                   help="the node's id (overrides the bootstrap's node.id)")
    p.add_argument("--service-zone", default="",
                   help="the node's zone (overrides the bootstrap's node.locality.zone)")
    p.add_argument("--file-flush-interval-msec", type=int, default=None,
                   help="how often access-log files are flushed (envoi's default 200; "
                        "Envoy's 10000)")
    p.add_argument("--drain-time-s", type=float, default=600.0,
                   help="on SIGTERM/SIGINT, how long open connections get to finish (600)")
    p.add_argument("--concurrency", type=int, default=None,
                   help="worker processes, each with its own event loop and a SO_REUSEPORT "
                        "socket per listener; the main process keeps the admin and replaces a "
                        "worker that dies (default: one per core, as Envoy; 1: a single "
                        "process)")
    p.add_argument("--cpuset-threads", action="store_true",
                   help="without --concurrency, one worker per CPU this process may run on "
                        "(its cpuset / affinity) instead of one per core of the machine")
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
    p.add_argument("--event-loop", choices=CHOICES, default=default_choice(),
                   help="event loop: uvloop, asyncio, or auto (uvloop when installed); "
                        "default $ENVOI_EVENT_LOOP or auto")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    return p


def default_concurrency(cpuset: bool = False) -> int:
    """Envoy's default: one worker per hardware thread (or per CPU of the cpuset)."""
    if cpuset:
        with contextlib.suppress(AttributeError, OSError):
            return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


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
    if not args.config_path and not args.config_yaml:
        print("envoi: error: a config is required (-c FILE and/or --config-yaml YAML)",
              file=sys.stderr)
        return 1
    try:
        setup_logging(args.log_level, path=args.log_path, fmt=args.log_format,
                      component_levels=args.component_log_level)
    except LogSetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.concurrency is None:
        args.concurrency = default_concurrency(args.cpuset_threads)
    if args.concurrency < 1:
        print("envoi: error: --concurrency must be at least 1", file=sys.stderr)
        return 1
    try:
        check_choice(args.event_loop)
    except EventLoopError as exc:
        print(f"envoi: error: {exc}", file=sys.stderr)
        return 1
    options = Options(
        config_path=args.config_path,
        config_yaml=args.config_yaml,
        mode=args.mode,
        log_level=args.log_level,
        drain_time_s=args.drain_time_s,
        concurrency=args.concurrency,
        admin_port_override=args.admin_port,
        blocked_plugins=[p[3:] for p in args.plugins if p.startswith("no:")],
        extra_plugins=[p for p in args.plugins if not p.startswith("no:")],
        autoload=False if args.disable_plugin_autoload else None,
        plugin_options=args,
        component_log_level=args.component_log_level,
        log_path=args.log_path,
        log_format=args.log_format,
        service_cluster=args.service_cluster,
        service_node=args.service_node,
        service_zone=args.service_zone,
        file_flush_interval_ms=args.file_flush_interval_msec,
        event_loop=args.event_loop,
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
    if args.concurrency > 1:
        from envoi.workers import WorkerPool

        # Fork before any event loop exists: a loop does not survive a fork.
        pool = WorkerPool(server, args.concurrency)
        pool.start()
        try:
            return pool.run()
        except OSError as exc:  # the admin port in use, for one
            print(f"envoi: {exc}", file=sys.stderr)
            return 1
    loop = new_event_loop(options.event_loop)
    asyncio.set_event_loop(loop)
    try:
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
