"""The suite's tables, as text for the terminal and as markdown for the README."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

MIB = 1024 * 1024
NA = "-"
COLUMNS = ("scenario", "--concurrency", "peer", "req/s", "p50", "p99", "CPU µs/req", "RSS",
           "PSS", "RSS/process", "req/s ÷ Envoy", "CPU ÷ Envoy", "RSS ÷ Envoy", "errors")
MEM_COLUMNS = ("test", "--concurrency", "peer", "load", "RSS before", "RSS with load", "growth",
               "growth ÷ Envoy's")


def _ms(v: float | None) -> str:
    if v is None:
        return NA
    return f"{v * 1000:.0f} µs" if v < 1 else f"{v:.2f} ms"


def _num(v: float | None, fmt: str = "{:,.0f}") -> str:
    return NA if v is None else fmt.format(v)


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or not b:
        return NA
    return f"{a / b:.2f}"


def _mib(v: float | None) -> str:
    return NA if not v else f"{v / MIB:.0f} MiB"


def table_rows(rows: Sequence[dict[str, Any]]) -> list[list[str]]:
    envoy = {(r["scenario"], r["concurrency"]): r for r in rows if r["peer"] == "envoy"}
    out = []
    for r in rows:
        ref = envoy.get((r["scenario"], r["concurrency"]), {})
        if r["error"]:
            out.append([r["scenario"], str(r["concurrency"]), r["peer"], "error: " + r["error"]
                        .splitlines()[0][:80], *[""] * 10])
            continue
        proxy = r["peer"] != "direct"
        out.append([
            r["scenario"], str(r["concurrency"]), r["peer"], _num(r["rps"]), _ms(r["p50_ms"]),
            _ms(r["p99_ms"]), _num(r["cpu_us_per_req"]) if proxy else NA,
            _mib(r["rss_bytes"]) if proxy else NA, _mib(r["pss_bytes"]) if proxy else NA,
            _mib(r.get("rss_max_process_bytes")) if proxy else NA,
            _ratio(r["rps"], ref.get("rps")),
            _ratio(r["cpu_us_per_req"], ref.get("cpu_us_per_req")) if proxy else NA,
            _ratio(r["rss_bytes"], ref.get("rss_bytes")) if proxy else NA,
            str(r["errors"]),
        ])
    return out


def filter_costs(rows: Sequence[dict[str, Any]]) -> list[str]:
    """For each scenario with an ``envoi-base`` row (envoi without the scenario's filter): what
    the filter costs, the envoi row's CPU per request minus envoi-base's, at each concurrency."""
    envoi = {(r["scenario"], r["concurrency"]): r for r in rows if r["peer"] == "envoi"}
    out = []
    for base in rows:
        if base["peer"] != "envoi-base":
            continue
        full = envoi.get((base["scenario"], base["concurrency"]))
        if not full or full["error"] or base["error"] or full["cpu_us_per_req"] is None \
                or base["cpu_us_per_req"] is None:
            continue
        cost = full["cpu_us_per_req"] - base["cpu_us_per_req"]
        out.append(f"{base['scenario']} --concurrency {base['concurrency']}: the filter costs "
                   f"{cost:+,.0f} µs CPU per request (envoi {full['cpu_us_per_req']:,.0f} - "
                   f"envoi-base {base['cpu_us_per_req']:,.0f})")
    return out


def memory_rows(mem: Sequence[dict[str, Any]]) -> list[list[str]]:
    envoy = {(m["test"], m["concurrency"]): m for m in mem if m["peer"] == "envoy"}
    out = []
    for m in mem:
        if m.get("error"):
            out.append([m["test"], str(m["concurrency"]), m["peer"],
                        "error: " + m["error"].splitlines()[0][:80], "", "", "", ""])
            continue
        ref = envoy.get((m["test"], m["concurrency"]), {})
        if m["test"] == "idle":
            load = f"{m['connections']:,} idle keep-alive connections"
            after = m["rss_with"]
        else:
            load = (f"{m['bytes'] / MIB:,.0f} MiB upload to a slow upstream "
                    f"({m['seconds']:.0f} s)")
            after = m["rss_peak"]
        out.append([m["test"], str(m["concurrency"]), m["peer"], load, _mib(m["rss_before"]),
                    _mib(after), f"{m['rss_growth'] / MIB:+.1f} MiB",
                    _ratio(m["rss_growth"], ref.get("rss_growth"))])
    return out


def _aligned(header: Sequence[str], body: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *body, strict=False)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=False)).rstrip()
             for row in (list(header), *body)]
    return "\n".join(lines)


def _md(header: Sequence[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---" if i < 3 else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)


def describe(meta: dict[str, Any]) -> list[str]:
    lay = ", ".join(
        f"{name}: " + (f"proxy on CPU {','.join(map(str, v['proxy_cpus']))}, load generator and "
                       f"backend on CPU {','.join(map(str, v['load_cpus']))}"
                       if v["proxy_cpus"] else "nothing pinned")
        for name, v in meta["layouts"].items())
    load = ", ".join(f"{x:.2f}" for x in meta["load_average_at_start"])
    return [
        f"{meta['date']}, {meta['mode']} mode: {meta['reps']} x {meta['seconds']:g} s per row "
        f"after {meta['warmup']:g} s of warm-up, medians",
        f"machine: {meta['machine']}; load average at start {load}",
        f"envoi {meta['envoi']} (commit {meta['commit'] or '?'}), Python {meta['python']}, "
        f"event loop: {meta['event_loop']}, HTTP/1.1 codec: {meta['http1_codec']}",
        f"Envoy {meta['envoy']}; load: {meta['wrk']}, h2load, pymongo, boto3; layouts: {lay}",
    ]


def render_text(meta: dict[str, Any], rows: Sequence[dict[str, Any]],
                mem: Sequence[dict[str, Any]], pending: Sequence[Any], header: bool = True
                ) -> str:
    parts: list[str] = []
    if header:
        parts += ["envoi benchmark suite", *describe(meta)]
    if rows:
        parts += ["", _aligned(COLUMNS, table_rows(rows))]
        parts += filter_costs(rows)
    if mem:
        parts += ["", _aligned(MEM_COLUMNS, memory_rows(mem))]
    if pending:
        parts += ["", "not run (slots for later):"]
        parts += [f"  {s.name}: {s.pending or 'no load defined'}" for s in pending]
    return "\n".join(parts)


def render_markdown(meta: dict[str, Any], rows: Sequence[dict[str, Any]],
                    mem: Sequence[dict[str, Any]], pending: Sequence[Any],
                    argv: Sequence[str]) -> str:
    cmd = "python -m bench " + " ".join(argv[1:])
    parts = [f"Command: `{cmd.strip()}`", "", *[f"- {line}" for line in describe(meta)], "",
             _md(COLUMNS, table_rows(rows))]
    costs = filter_costs(rows)
    if costs:
        parts += ["", *[f"- {line}" for line in costs]]
    if mem:
        parts += ["", _md(MEM_COLUMNS, memory_rows(mem))]
    if pending:
        parts += ["", "Not run yet: " + "; ".join(f"{s.name} ({s.pending})" for s in pending)]
    return "\n".join(parts) + "\n"
