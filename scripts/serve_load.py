"""A bounded loopback load test of digitloc-serve: hostile single requests, then a burst.

Starts ``digitloc-serve`` on 127.0.0.1 (only) at a free port, measures the server's RSS at
idle, sends each hostile request alone (its peak RSS above idle, its status, and the slowest
/healthz answer while it runs), then a burst of good real photos mixed with bad and oversized
requests, bounded by count and time; then RSS again once the burst is over. Last, a siege:
good requests from 50 clients while 2 uploaders stall chunked uploads and 300 idle connections
are held open, the server under ``ulimit -n 256`` (its p99, failures, slowest /healthz and RSS).
Writes serve-load.json and serve-load.md (with the command, CPU model and instruction set).

    python scripts/serve_load.py --photos ../shared/data/svhn-train-sample/train -o benchmarks/results/cpu
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import shlex
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import httpx
import numpy as np

HOST = "127.0.0.1"
MB = 1024 * 1024


def rss_mb(pid: int) -> float:
    """Resident memory of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class PeakRss:
    """Samples a process's RSS every few milliseconds while in use; ``peak`` is the highest seen."""

    def __init__(self, pid: int, every_s: float = 0.005) -> None:
        self.pid, self.every_s, self.peak = pid, every_s, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mb(self.pid))
            time.sleep(self.every_s)

    def __enter__(self) -> PeakRss:
        self.peak = rss_mb(self.pid)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb(self.pid))


def chunked_upload(port: int, path: str, total: int, chunk: int = 64 * 1024,
                   ctype: str = "multipart/form-data; boundary=xxxxxxxxxxxxxxxx") -> tuple[int, int]:
    """Send ``total`` bytes chunked (no content-length); stop as soon as the server answers.
    Returns the HTTP status (0 if none came) and the bytes sent."""
    head = b"--xxxxxxxxxxxxxxxx\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.png\"\r\n\r\n"
    sent = 0
    with socket.create_connection((HOST, port), timeout=60) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: {ctype}\r\n"
                     "Transfer-Encoding: chunked\r\n\r\n".encode())
        block = b"\0" * chunk
        sock.setblocking(False)
        first = True
        while sent < total:
            data = head if first and ctype.startswith("multipart") else block
            first = False
            frame = f"{len(data):x}\r\n".encode() + data + b"\r\n"
            try:
                view = memoryview(frame)
                while view:
                    try:
                        n = sock.send(view)
                        view = view[n:]
                    except BlockingIOError:
                        if _answered(sock):
                            return _status(sock), sent
                        time.sleep(0.001)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(data)
            if _answered(sock):
                break
        try:
            sock.send(b"0\r\n\r\n")
        except OSError:
            pass
        return _status(sock), sent


def _answered(sock: socket.socket) -> bool:
    import select

    return bool(select.select([sock], [], [], 0)[0])


def _status(sock: socket.socket) -> int:
    sock.setblocking(True)
    try:
        line = sock.recv(64).split(b"\r\n", 1)[0].split()
        return int(line[1]) if len(line) > 1 else 0
    except (OSError, ValueError):
        return 0


def png(h: int, w: int, channels: int = 3, dtype: type = np.uint8) -> bytes:
    image = np.zeros((h, w, channels), dtype)
    return cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 9])[1].tobytes()


def webp_bomb(side: int = 16000) -> bytes:
    """A lossy WebP header claiming side x side pixels."""
    return b"RIFF\0\0\0\0WEBPVP8 \0\0\0\0\0\0\0\x9d\x01\x2a" + struct.pack("<HH", side, side) + b"\0" * 64


def tiff_bomb(side: int = 60000) -> bytes:
    """A classic TIFF whose first directory claims side x side pixels."""
    entry = struct.pack("<HHII", 256, 4, 1, side) + struct.pack("<HHII", 257, 4, 1, side)
    return b"II*\x00\x08\x00\x00\x00\x02\x00" + entry + b"\0" * 64


def start_server(model: str | None, port: int, *options: str, nofile: int = 0) -> subprocess.Popen:
    """digitloc-serve on HOST:port, under ``ulimit -n nofile`` when given; ready when /healthz answers."""
    import resource

    def limit() -> None:
        if nofile:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    cmd = [sys.executable, "-m", "digitloc.serve", "--host", HOST, "--port", str(port), "--provider", "cpu", *options]
    if model:
        cmd += ["--model", model]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=limit)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if httpx.get(f"http://{HOST}:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
        if proc.poll() is not None:
            break
    proc.kill()
    raise SystemExit(f"error: server did not start: {proc.stderr.read().decode() if proc.stderr else ''}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def hostile(port: int, pid: int, idle: float, big_count: int, big_side: int) -> list[dict]:
    """Each hostile request alone: status, seconds, peak RSS above idle, slowest /healthz meanwhile."""
    url = f"http://{HOST}:{port}"
    big = png(big_side, big_side)
    deep = png(big_side, big_side, 4, np.uint16)
    cases = [
        ("1 GB chunked multipart to /predict", lambda: chunked_upload(port, "/predict", 1024 * MB)[0]),
        ("1 GB chunked multipart to /predict/batch", lambda: chunked_upload(port, "/predict/batch", 1024 * MB)[0]),
        ("1 GB chunked raw image/png to /predict",
         lambda: chunked_upload(port, "/predict", 1024 * MB, ctype="image/png")[0]),
        ("11 MB body with content-length", lambda: httpx.post(f"{url}/predict", content=b"\0" * (11 * MB),
                                                              headers={"content-type": "image/png"}).status_code),
        (f"{big_count} PNGs of {big_side}x{big_side} to /predict/batch ({big_count * len(big) / MB:.1f} MB)",
         lambda: httpx.post(f"{url}/predict/batch", files=[("file", (f"{i}.png", big, "image/png"))
                                                           for i in range(big_count)], timeout=600).status_code),
        (f"2 16-bit RGBA PNGs of {big_side}x{big_side} to /predict/batch",
         lambda: httpx.post(f"{url}/predict/batch", files=[("file", (f"{i}.png", deep, "image/png")) for i in range(2)],
                            timeout=600).status_code),
        ("WebP claiming 16000x16000", lambda: httpx.post(f"{url}/predict", content=webp_bomb(),
                                                          headers={"content-type": "image/webp"}).status_code),
        ("TIFF claiming 60000x60000", lambda: httpx.post(f"{url}/predict", content=tiff_bomb(),
                                                          headers={"content-type": "image/tiff"}).status_code),
        ("PNG of 20000x20000 (header over the pixel limit)",
         lambda: httpx.post(f"{url}/predict", content=png(8, 8)[:16] + struct.pack(">II", 20000, 20000) + png(8, 8)[24:],
                            headers={"content-type": "image/png"}).status_code),
    ]
    rows = []
    for name, send in cases:
        slowest = [0.0]
        done = threading.Event()

        def watch(done: threading.Event = done, slowest: list[float] = slowest) -> None:
            while not done.is_set():
                start = time.perf_counter()
                try:
                    httpx.get(f"{url}/healthz", timeout=30)
                except httpx.HTTPError:
                    pass
                slowest[0] = max(slowest[0], time.perf_counter() - start)
                time.sleep(0.1)

        watcher = threading.Thread(target=watch, daemon=True)
        with PeakRss(pid) as peak:
            watcher.start()
            start = time.perf_counter()
            try:
                status = send()
            except httpx.HTTPError as exc:
                status = f"client error: {type(exc).__name__}"
            seconds = time.perf_counter() - start
            done.set()
            watcher.join()
        rows.append({"request": name, "status": status, "seconds": round(seconds, 2),
                     "peak_rss_above_idle_mb": round(peak.peak - idle, 1),
                     "slowest_healthz_ms": round(slowest[0] * 1000, 1)})
        print(f"{name}: {status} in {seconds:.2f} s, peak +{peak.peak - idle:.0f} MB, "
              f"slowest /healthz {slowest[0] * 1000:.0f} ms", file=sys.stderr)
    return rows


def burst(port: int, pid: int, photos: list[Path], count: int, seconds: float, threads: int) -> dict:
    """``count`` requests from ``threads`` clients (stopping at ``seconds``): 70 % good real photos,
    the rest bad or oversized. A failure is a status other than the one expected."""
    url = f"http://{HOST}:{port}"
    good = [p.read_bytes() for p in photos]
    bad = [("garbage", b"definitely not an image", "image/png", 422), ("text", b"hello", "text/plain", 415),
           ("truncated", good[0][:60], "image/png", 422), ("empty", b"", "image/png", 400),
           ("oversized", b"\0" * (11 * MB), "image/png", 413), ("webp bomb", webp_bomb(), "image/webp", 422)]
    rng = np.random.default_rng(0)
    plan = []
    for i in range(count):
        if rng.random() < 0.7:
            plan.append((f"photo {i % len(good)}", good[i % len(good)], "image/png", 200))
        else:
            plan.append(bad[int(rng.integers(len(bad)))])
    deadline = time.time() + seconds
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    failures: list[str] = []
    lock = threading.Lock()
    client = httpx.Client(timeout=30, limits=httpx.Limits(max_connections=threads))

    def one(item: tuple[str, bytes, str, int]) -> None:
        name, body, ctype, expected = item
        if time.time() > deadline:
            return
        start = time.perf_counter()
        try:
            status = client.post(f"{url}/predict", content=body, headers={"content-type": ctype}).status_code
        except httpx.HTTPError as exc:
            status = type(exc).__name__
        ms = (time.perf_counter() - start) * 1000
        with lock:
            latencies.append(ms)
            statuses[str(status)] = statuses.get(str(status), 0) + 1
            if status != expected:
                failures.append(f"{name}: {status}, expected {expected}")

    with PeakRss(pid) as peak:
        start = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(threads) as pool:
            list(pool.map(one, plan))
        wall = time.perf_counter() - start
    client.close()
    return {"requests": len(latencies), "planned": count, "threads": threads, "seconds": round(wall, 2),
            "requests_per_s": round(len(latencies) / wall, 1), "p50_ms": round(float(np.percentile(latencies, 50)), 1),
            "p99_ms": round(float(np.percentile(latencies, 99)), 1), "statuses": statuses, "failures": len(failures),
            "failure_examples": failures[:10], "peak_rss_mb": round(peak.peak, 1)}


def siege(port: int, pid: int, photos: list[Path], count: int, seconds: float, clients: int, idle: int,
          slow: int) -> dict:
    """``count`` good requests from ``clients`` threads (stopping at ``seconds``) while ``slow`` uploaders
    stall chunked uploads (reopened when cut) and ``idle`` connections are held open (reopened each 0.5 s
    when closed); /healthz is polled every 0.1 s throughout (a connection reset within a second is tried once
    more at once and counted apart; unanswered means no answer either time). A failure is any status but 200."""
    import select

    url = f"http://{HOST}:{port}"
    good = [p.read_bytes() for p in photos]
    stop = threading.Event()
    cut = {"slow": 0, "idle": 0}

    def stall() -> None:
        head = b'--xxxxxxxxxxxxxxxx\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'
        while not stop.is_set():
            try:
                with socket.create_connection((HOST, port), timeout=1) as sock:
                    sock.sendall(f"POST /predict/batch HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: multipart/form-data; "
                                 "boundary=xxxxxxxxxxxxxxxx\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
                                 + f"{len(head):x}\r\n".encode() + head + b"\r\n")
                    while not stop.is_set() and not select.select([sock], [], [], 0.1)[0]:
                        pass
                    cut["slow"] += not stop.is_set()
            except OSError:
                time.sleep(0.1)

    def hold() -> None:
        socks: list[socket.socket | None] = [None] * idle
        while not stop.is_set():
            for i, sock in enumerate(socks):
                if sock is not None and select.select([sock], [], [], 0)[0]:
                    sock.close()
                    socks[i], cut["idle"] = None, cut["idle"] + 1
                if socks[i] is None and not stop.is_set():
                    try:
                        socks[i] = socket.create_connection((HOST, port), timeout=1)
                    except OSError:
                        pass
            stop.wait(0.5)
        for sock in socks:
            if sock is not None:
                sock.close()

    slowest = [0.0]
    healthz_errors: list[str] = []
    healthz_resets: list[str] = []

    def watch() -> None:
        while not stop.is_set():
            start = time.perf_counter()
            for attempt in (1, 2):
                try:
                    httpx.get(f"{url}/healthz", timeout=10)
                    break
                except (httpx.ReadError, httpx.RemoteProtocolError, httpx.ConnectError) as exc:
                    # A connection reset at once (the cap's churn under this flood of idle connections) is
                    # tried again at once, as a health checker would; kept in healthz_resets.
                    note = f"{type(exc).__name__} after {time.perf_counter() - start:.2f} s: {exc}"
                    if attempt == 1 and time.perf_counter() - start < 1.0:
                        healthz_resets.append(note)
                        continue
                    healthz_errors.append(note)
                except httpx.HTTPError as exc:
                    healthz_errors.append(f"{type(exc).__name__} after {time.perf_counter() - start:.2f} s: {exc}")
                slowest[0] = max(slowest[0], 10.0)  # unanswered: counted as the full 10 s
                break
            slowest[0] = max(slowest[0], time.perf_counter() - start)
            stop.wait(0.1)

    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()
    deadline = time.time() + seconds
    client = httpx.Client(timeout=30, limits=httpx.Limits(max_connections=clients))

    def one(i: int) -> None:
        if time.time() > deadline:
            return
        start = time.perf_counter()
        try:
            status = client.post(f"{url}/predict", content=good[i % len(good)],
                                 headers={"content-type": "image/png"}).status_code
        except httpx.HTTPError as exc:
            status = type(exc).__name__
        with lock:
            latencies.append((time.perf_counter() - start) * 1000)
            if status != 200:
                failures.append(f"photo {i % len(good)}: {status}")

    rss_start = rss_mb(pid)
    helpers = [threading.Thread(target=f, daemon=True) for f in (*[stall] * slow, hold, watch)]
    with PeakRss(pid) as peak:
        for t in helpers:
            t.start()
        time.sleep(1.0)  # the idle connections and stalled uploads are in place before the clients start
        start = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(clients) as pool:
            list(pool.map(one, range(count)))
        wall = time.perf_counter() - start
        stop.set()
        for t in helpers:
            t.join()
    client.close()
    time.sleep(2)
    after = rss_mb(pid)
    return {"clients": clients, "idle_connections": idle, "slow_uploaders": slow, "requests": len(latencies),
            "planned": count, "seconds": round(wall, 2), "requests_per_s": round(len(latencies) / wall, 1),
            "p50_ms": round(float(np.percentile(latencies, 50)), 1),
            "p99_ms": round(float(np.percentile(latencies, 99)), 1), "failures": len(failures),
            "failure_examples": failures[:10], "slowest_healthz_ms": round(slowest[0] * 1000, 1),
            "healthz_errors": healthz_errors[:10], "healthz_resets_retried": len(healthz_resets),
            "healthz_reset_examples": healthz_resets[:5],
            "slow_uploads_cut": cut["slow"], "idle_connections_closed_by_server": cut["idle"],
            "rss_start_mb": round(rss_start, 1), "rss_peak_mb": round(peak.peak, 1), "rss_after_mb": round(after, 1),
            "rss_after_minus_start_mb": round(after - rss_start, 1)}


def markdown(result: dict) -> str:
    env, b = result["environment"], result["burst"]
    lines = [f"Command: `{result['command']}`", "",
             f"CPU: {env['cpu_summary']}; "
             f"model {result['model']}; 1-minute load average {result['load_average_1min'][0]} at the start, "
             f"{result['load_average_1min'][1]} at the end (other work shares these cores: timings vary with it)", "",
             "| hostile request (alone) | status | seconds | peak RSS above idle (MB) | slowest /healthz (ms) |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['request']} | {r['status']} | {r['seconds']} | {r['peak_rss_above_idle_mb']} | "
              f"{r['slowest_healthz_ms']} |" for r in result["hostile"]]
    lines += ["", "| burst | requests | req/s | p50 ms | p99 ms | failures | statuses |", "|---|---|---|---|---|---|---|",
              f"| {b['threads']} client threads, 70 % real photos | {b['requests']} | {b['requests_per_s']} | "
              f"{b['p50_ms']} | {b['p99_ms']} | {b['failures']} | {json.dumps(b['statuses'])} |", "",
              "| server RSS (MB) | idle at start | before burst | peak in burst | after burst | after - before |",
              "|---|---|---|---|---|---|",
              f"| | {result['rss_idle_mb']} | {result['rss_before_burst_mb']} | {b['peak_rss_mb']} | "
              f"{result['rss_after_burst_mb']} | {result['rss_after_minus_before_mb']:+} |", ""]
    g = result.get("siege")
    if g:
        lines += [f"Siege (server under `ulimit -n {result['server_nofile'] or 'unchanged'}`, body deadline "
                  f"{result['body_timeout_s']} s, keep-alive {result['keep_alive_s']} s):", "",
                  "| clients | idle connections | slow uploaders | requests | req/s | p50 ms | p99 ms | failures | "
                  "slowest /healthz ms | slow uploads cut (408) | idle closed by server | RSS start / peak / after MB |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|",
                  f"| {g['clients']} | {g['idle_connections']} | {g['slow_uploaders']} | {g['requests']} | "
                  f"{g['requests_per_s']} | {g['p50_ms']} | {g['p99_ms']} | {g['failures']} | {g['slowest_healthz_ms']} | "
                  f"{g['slow_uploads_cut']} | {g['idle_connections_closed_by_server']} | {g['rss_start_mb']} / "
                  f"{g['rss_peak_mb']} / {g['rss_after_mb']} ({g['rss_after_minus_start_mb']:+}) |", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, required=True, help="Folder of real photos (PNG).")
    parser.add_argument("--model", default=None, help="ONNX model (default: the shipped one).")
    parser.add_argument("--requests", type=int, default=1000, help="Requests in the burst (at most).")
    parser.add_argument("--seconds", type=float, default=120.0, help="Time limit of the burst.")
    parser.add_argument("--threads", type=int, default=8, help="Client threads in the burst.")
    parser.add_argument("--big-count", type=int, default=32, help="Large PNGs in the hostile batch.")
    parser.add_argument("--big-side", type=int, default=6300, help="Side of each large PNG.")
    parser.add_argument("--siege-requests", type=int, default=1000, help="Good requests in the siege (0: no siege).")
    parser.add_argument("--siege-clients", type=int, default=50, help="Client threads in the siege.")
    parser.add_argument("--idle", type=int, default=300, help="Idle connections held open during the siege.")
    parser.add_argument("--slow", type=int, default=2, help="Stalled chunked uploads during the siege.")
    parser.add_argument("--server-nofile", type=int, default=256, help="The server's file limit (ulimit -n; 0: as is).")
    parser.add_argument("--body-timeout", type=float, default=10.0, help="The server's --body-timeout.")
    parser.add_argument("--keep-alive-s", type=int, default=5, help="The server's --keep-alive-s.")
    parser.add_argument("-o", "--output", type=Path, required=True, help="Folder for serve-load.json and .md.")
    args = parser.parse_args(argv)
    photos = sorted(args.photos.glob("*.png"))[:200]
    if not photos:
        raise SystemExit(f"error: {args.photos}: no PNG photos")
    load_before = os.getloadavg()[0]
    port = free_port()
    proc = start_server(args.model, port, "--body-timeout", str(args.body_timeout), "--keep-alive-s",
                        str(args.keep_alive_s), nofile=args.server_nofile)
    try:
        for p in photos[:20]:  # warm up: first requests allocate the session's buffers
            httpx.post(f"http://{HOST}:{port}/predict", content=p.read_bytes(), headers={"content-type": "image/png"})
        time.sleep(1)
        idle = rss_mb(proc.pid)
        rows = hostile(port, proc.pid, idle, args.big_count, args.big_side)
        time.sleep(2)
        before = rss_mb(proc.pid)
        result_burst = burst(port, proc.pid, photos, args.requests, args.seconds, args.threads)
        time.sleep(2)
        after = rss_mb(proc.pid)
        result_siege = (siege(port, proc.pid, photos, args.siege_requests, args.seconds, args.siege_clients, args.idle,
                              args.slow) if args.siege_requests else None)
    finally:
        proc.terminate()
        proc.wait(10)
    from digitloc.benchmarks.report import environment

    given = argv if argv is not None else sys.argv[1:]
    command = "python scripts/serve_load.py " + " ".join(shlex.quote(a) for a in given)
    result = {"command": command, "environment": environment(),
              "model": args.model or "digitloc-default-int8.onnx (shipped)", "photos": str(args.photos),
              "rss_idle_mb": round(idle, 1), "hostile": rows, "rss_before_burst_mb": round(before, 1),
              "burst": result_burst, "rss_after_burst_mb": round(after, 1),
              "rss_after_minus_before_mb": round(after - before, 1), "siege": result_siege,
              "server_nofile": args.server_nofile, "body_timeout_s": args.body_timeout, "keep_alive_s": args.keep_alive_s,
              "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)]}
    args.output.mkdir(parents=True, exist_ok=True)
    from digitloc.runtime.fileio import atomic_write_text

    atomic_write_text(args.output / "serve-load.json", json.dumps(result, indent=1))
    atomic_write_text(args.output / "serve-load.md", markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("DIGITLOC_PROGRESS", "0")
    sys.exit(main())
