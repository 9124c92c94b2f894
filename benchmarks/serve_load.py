"""`tlearn serve` under load on loopback: throughput against the engine's, good requests among hostile ones,
latency, errors by status, memory.

    python -m benchmarks.serve_load [--bundle runs/demo] [--clients 8] [--seconds 30] [--baseline-seconds 10]
                                    [--scale 1,8,32] [--scale-seconds 10]

Starts `tlearn serve BUNDLE` in a subprocess on a free 127.0.0.1 port (default bundle: a tiny one trained
here on synthetic shapes, in seconds; `--builtin` trains one on the built-in MobileNetV2 at 224 px instead).
First the scaling figures (`--scale`; "" skips them):
  engine    the bundle's network alone in this process, on pre-decoded inputs, at batch sizes 1, 2, 4, 8, 16
            and 32: images per second and CPU per image; the best of them is the ceiling the server can reach
            on this machine. And the CPU of decoding the photo: a server decodes on the same cores, so even
            with every core busy on nothing but the engine's and the decoding's CPU it reaches only a share of
            that best (the most share possible)
  scaling   a server of its own (with --max-pending at least the clients), then 1, 8 and 32 clients each
            sending one 1600 x 1200 JPEG to /predict in a loop for `--scale-seconds`: requests per second,
            p50 / p95 latency, the p50 of the time the server itself counts (its "seconds": from the request's
            headers to its answer, without the network's transport and the client), throughput as a share of
            the engine's best, and p95 against the p50 of one client alone (the single-request latency), beside
            the least that ratio can be with that many requests in flight (clients / the engine's best rate,
            Little's law, over the same p50); and the images per forward pass the server chose (its /model)
Then two phases with `--clients` concurrent clients (`--seconds 0` skips them):
  baseline  good requests only (one JPEG to /predict, or four to /predict/batch), `--baseline-seconds`
  mixed     the same good requests among bad ones: truncated and non-image files, a PNG header claiming
            100 MP, a batch of sixteen 49 MP PNGs (over the pixels of one request), a batch of four real
            49 MP PNGs (L, RGB, RGBA, 16-bit: decoded, the heaviest work a client can ask for), JSON nested
            200,000 deep, JSON of a million tokens, a body over --max-mb; `--seconds`
Every request is sent only to 127.0.0.1; each client starts no request after the phase's deadline (one
in flight then ends within the server's --timeout), nor once a phase has sent `--max-requests`.
Prints tables (the scaling figures; p50 / p95 latency of good requests in each phase and
their ratio, counts by status for each kind of request, the server's peak RSS from /proc) and writes
JSON to benchmarks/results/serve_load.json.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

from benchmarks.machine import machine

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "serve_load.json"
HOST = "127.0.0.1"  # the only address this benchmark talks to


@dataclass(frozen=True)
class Kind:
    """One kind of request: how often a client sends it (weight), and how to send it."""

    name: str
    weight: int
    good: bool
    send: Callable[[httpx.Client], httpx.Response]


@dataclass(frozen=True)
class Outcome:
    kind: str
    status: str  # the HTTP status, or the exception's name when there was no answer
    seconds: float
    server_seconds: float | None = None  # what the server counted itself (its answer's "seconds")


# --- what is sent ----------------------------------------------------------------------------------


def jpeg(size: tuple[int, int], seed: int) -> bytes:
    """A photo-like JPEG: smooth colour gradients plus noise, so it compresses as a photo does."""
    rng = np.random.default_rng(seed)
    w, h = size
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 / w, y * 255 / h, (x + y) * 127 / (w + h)], axis=-1)
    pixels = np.clip(base + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=85)
    return buf.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A 70-byte PNG whose header claims width x height pixels: a decompression bomb's calling card."""
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def real_png(mode: str, side: int = 7000) -> bytes:
    """A genuine side x side PNG of one colour: 49 MP that compress to tens of KB, all decoded."""
    fill: Any = 128 if mode in ("L", "I;16") else (10, 200, 30, 255)[: len(mode)]
    buf = io.BytesIO()
    Image.new(mode, (side, side), fill).save(buf, "PNG")
    return buf.getvalue()


def multipart(path: str, field: str, files: list[tuple[str, bytes, str]]) -> Callable[[httpx.Client], httpx.Response]:
    return lambda http: http.post(path, files=[(field, f) for f in files])


def raw(path: str, body: bytes, content_type: str) -> Callable[[httpx.Client], httpx.Response]:
    return lambda http: http.post(path, content=body, headers={"content-type": content_type})


def kinds(photo: bytes, photos: list[bytes], max_mb: float) -> list[Kind]:
    jpg, png, js = "image/jpeg", "image/png", "application/json"
    sixteen = [("bomb.png", real_png("L"), png)] * 16  # sixteen 49 MP files of 60 KB each
    heavy = [(f"{mode}.png", real_png(mode), png) for mode in ("L", "RGB", "RGBA", "I;16")]
    four = [(f"{i}.jpg", p, jpg) for i, p in enumerate(photos)]
    return [
        Kind("good: 1 JPEG", 12, True, multipart("predict", "file", [("a.jpg", photo, jpg)])),
        Kind("good: batch of 4 JPEGs", 4, True, multipart("predict/batch", "files", four)),
        Kind("truncated JPEG", 1, False, multipart("predict", "file", [("t.jpg", photo[: len(photo) // 2], jpg)])),
        Kind("not an image", 1, False, multipart("predict", "file", [("n.jpg", b"just some words", jpg)])),
        Kind("PNG claiming 100 MP", 1, False, raw("predict", png_claiming(10_000, 10_000), png)),
        Kind("batch of 16 x 49 MP PNGs", 1, False, multipart("predict/batch", "files", sixteen)),
        Kind("batch of 4 x 49 MP PNGs, decoded", 1, False, multipart("predict/batch", "files", heavy)),
        Kind("JSON 200,000 deep", 1, False, raw("predict", b"[" * 200_000 + b"]" * 200_000, js)),
        Kind("JSON of a million tokens", 1, False, raw("predict/batch", b"[" + b"0," * 1_000_000 + b"0]", js)),
        Kind(f"body over {max_mb:g} MB", 1, False, raw("predict", b"\xff\xd8" + bytes(int((max_mb + 1) * 2**20)), jpg)),
    ]


# --- the server ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def tiny_bundle(folder: Path, *, builtin: bool = False) -> Path:
    """A bundle trained here in a few seconds (tiny backbone, random weights, 64 px): no download. With
    `builtin`, the built-in MobileNetV2 at its 224 px (the network a user serves; a minute of CPU)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TLEARN_CACHE_DIR", str(folder / "cache"))
    import tlearn
    from tlearn.data.synthetic import make_sample_dataset

    data = make_sample_dataset(folder / "shapes", classes=4, per_class=24, seed=0)
    out = folder / "bundle"
    if builtin:
        tlearn.train(data, method="features", out=out)
    else:
        tlearn.train(
            data, method="features", backbone="test_efficientnet", weights="none", input_size=64, out=out, C=1.0
        )
    return out


def stop_server(server: subprocess.Popen[bytes]) -> None:
    server.terminate()
    try:
        server.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.kill()


def start_server(
    bundle: Path, port: int, extra: list[str], log: Path, *, plain: bool = False
) -> subprocess.Popen[bytes]:
    """`tlearn serve BUNDLE` on `port`, or with `plain` the plain way's server of the same bundle
    (benchmarks/plain_server.py, under uvicorn; `extra` is then ignored)."""
    env = {**os.environ, "COLUMNS": "200"}
    if plain:
        cmd = [sys.executable, "-m", "uvicorn", "benchmarks.plain_server:app", "--host", HOST, "--port", str(port)]
        cmd += ["--log-level", "warning"]
        env["PLAIN_BUNDLE"] = str(bundle)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    else:
        cmd = [sys.executable, "-c", "from tlearn.cli import main; main()", "serve", str(bundle), "--host", HOST]
        cmd += ["--port", str(port), *extra]
    with log.open("wb") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)


def wait_until_up(url: str, server: subprocess.Popen[bytes], log: Path, *, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"The server exited with code {server.returncode}:\n{log.read_text()[-2000:]}")
        try:
            if httpx.get(url + "health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"The server did not answer /health within {seconds:.0f} s.")


def proc_kb(pid: int, field: str) -> int | None:
    """A field of /proc/PID/status in kB (VmRSS: resident now; VmHWM: the most it has been); None elsewhere."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class RssSampler:
    """Samples the server's resident memory every 0.1 s: a timeline's maximum where /proc has no VmHWM."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak_kb = pid, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.peak_kb = max(self.peak_kb, rss_kb(self.pid) or 0)


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process so far, all its threads (psutil where /proc is missing)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        try:
            import psutil

            t = psutil.Process(pid).cpu_times()
            return float(t.user + t.system)
        except (ImportError, OSError):
            return None


def rss_kb(pid: int) -> int | None:
    now = proc_kb(pid, "VmRSS")
    if now is None:
        try:
            import psutil

            now = psutil.Process(pid).memory_info().rss // 1024
        except (ImportError, OSError):
            return None
    return now


# --- the clients -----------------------------------------------------------------------------------


def run_phase(
    url: str, menu: list[Kind], *, clients: int, seconds: float, max_requests: int, seed: int
) -> list[Outcome]:
    """`clients` threads, each sending requests drawn from `menu` by weight until the deadline."""
    order = [k for k in menu for _ in range(k.weight)]
    deadline = time.monotonic() + seconds
    budget = iter(range(max_requests))  # shared by the clients, under the lock
    lock = threading.Lock()

    def client(k: int) -> list[Outcome]:
        rng = random.Random(seed * 1000 + k)
        out: list[Outcome] = []
        with httpx.Client(base_url=url, timeout=120) as http:
            while time.monotonic() < deadline:
                with lock:
                    if next(budget, None) is None:
                        break
                kind = rng.choice(order)
                start = time.perf_counter()
                inside = None
                try:
                    res = kind.send(http)
                    status = str(res.status_code)
                    if status == "200":
                        inside = res.json().get("seconds")
                except httpx.HTTPError as err:
                    status = type(err).__name__
                out.append(Outcome(kind.name, status, time.perf_counter() - start, inside))
        return out

    with ThreadPoolExecutor(clients) as pool:
        return [o for batch in pool.map(client, range(clients)) for o in batch]


def latency(outcomes: list[Outcome]) -> dict[str, float | int]:
    ok = [o.seconds for o in outcomes if o.status == "200"]
    if not ok:
        return {"n": 0}
    p50, p95 = np.percentile(ok, [50, 95])
    return {"n": len(ok), "p50_ms": round(p50 * 1000, 1), "p95_ms": round(p95 * 1000, 1)}


def summarise(outcomes: list[Outcome], menu: list[Kind], seconds: float) -> dict[str, Any]:
    good = {k.name for k in menu if k.good}
    by_kind = {k.name: dict(Counter(o.status for o in outcomes if o.kind == k.name)) for k in menu}
    return {
        "requests": len(outcomes),
        "requests_per_second": round(len(outcomes) / seconds, 1),
        "good": latency([o for o in outcomes if o.kind in good]),
        "good_failed": sum(1 for o in outcomes if o.kind in good and o.status != "200"),
        "by_status": dict(sorted(Counter(o.status for o in outcomes).items())),
        "by_kind": {name: dict(sorted(c.items())) for name, c in by_kind.items() if c},
    }


def print_table(result: dict[str, Any]) -> None:
    base, mixed = result["baseline"], result["mixed"]
    options = " ".join(result["server_args"]) or "defaults"
    print(f"\ntlearn serve on {HOST}, {result['clients']} clients; server options: {options}")
    print(f"{'phase':<10} {'requests':>9} {'req/s':>7} {'good p50':>10} {'good p95':>10} {'good not 200':>13}")
    for name, phase in (("baseline", base), ("mixed", mixed)):
        if phase is None:
            continue
        g = phase["good"]
        p50 = f"{g['p50_ms']:.0f} ms" if g["n"] else "-"
        p95 = f"{g['p95_ms']:.0f} ms" if g["n"] else "-"
        counts = f"{phase['requests']:>9} {phase['requests_per_second']:>7}"
        print(f"{name:<10} {counts} {p50:>10} {p95:>10} {phase['good_failed']:>13}")
    if base and base["good"]["n"] and mixed["good"]["n"]:
        print(
            f"good requests among hostile ones: p50 x{mixed['good']['p50_ms'] / base['good']['p50_ms']:.1f}, "
            f"p95 x{mixed['good']['p95_ms'] / base['good']['p95_ms']:.1f} of the baseline"
        )
    print(f"\n{'mixed phase: kind of request':<36} statuses (count)")
    for name, counts in mixed["by_kind"].items():
        print(f"{name:<36} " + ", ".join(f"{s}: {n}" for s, n in counts.items()))
    print(f"{'all':<36} " + ", ".join(f"{s}: {n}" for s, n in mixed["by_status"].items()))
    mem = result["memory_mb"]
    print(
        f"\nserver RSS: {mem['after_warm_up']} MB after warm-up, peak {mem['peak']} MB "
        f"({mem['peak_source']}); server still up: {result['server_up_after']}"
    )  # fmt: skip


# --- throughput against the engine's ----------------------------------------------------------------

ENGINE_BATCHES = (1, 2, 4, 8, 16, 32)  # 32: the most images the server puts in one forward pass (serve/pass_size.py)


@dataclass(frozen=True)
class Engine:
    """The bundle's network alone on pre-decoded inputs, and what a server must do besides it for each request.

    images_per_second and cpu_ms_per_image are by batch size (CPU: of all the process's threads, in ms of one
    core); decode_cpu_ms is the CPU of turning the request's photo into the model's input (`prepare_input`, the
    call the server's decoding threads make), which a server runs on the same cores as the network.
    """

    images_per_second: dict[str, float]
    cpu_ms_per_image: dict[str, float]
    decode_cpu_ms: float
    cores: int  # the cores this process may run on

    @property
    def best(self) -> str:
        return max(self.images_per_second, key=lambda b: self.images_per_second[b])

    @property
    def most_share_possible(self) -> float:
        """The largest share of the engine's best throughput that a server decoding on the same cores can reach,
        even with HTTP free: every core busy with the engine's and the decoding's CPU of each image."""
        most = self.cores * 1000 / (self.cpu_ms_per_image[self.best] + self.decode_cpu_ms)
        return min(1.0, most / self.images_per_second[self.best])


def engine_throughput(bundle: Path, photo: bytes, *, engine: str = "auto", seconds: float = 3.0) -> Engine:
    """The bundle's network alone on pre-decoded inputs at each of ENGINE_BATCHES, and the decoding of `photo`.

    Loads the bundle the way `tlearn serve` does (`engine`: "auto" is ONNX Runtime where it is installed, as
    in the server), decodes `photo` once, and times `answer_of_inputs` (the call the server's passes make) on
    copies of it, after two warm-up passes per batch size; then times `prepare_input(photo)` for `seconds`.
    """
    from tlearn.infer.load import load_for_serving

    predictor, _ = load_for_serving(bundle, engine=engine)
    x = predictor.prepare_input(photo)
    rates, cpu = {}, {}
    for size in ENGINE_BATCHES:
        batch = np.stack([x] * size)
        for _ in range(2):
            predictor.answer_of_inputs(batch)
        calls, wall, cpu_s = _timed(lambda b=batch: predictor.answer_of_inputs(b), seconds)
        rates[str(size)] = round(calls * size / wall, 1)
        cpu[str(size)] = round(cpu_s * 1000 / (calls * size), 1)
    calls, _, cpu_s = _timed(lambda: predictor.prepare_input(photo), seconds)
    return Engine(rates, cpu, round(cpu_s * 1000 / calls, 1), len(os.sched_getaffinity(0)))


def _timed(call: Callable[[], object], seconds: float) -> tuple[int, float, float]:
    """(calls, wall seconds, CPU seconds of the whole process) of `call` repeated for `seconds`, at least 3 times."""
    n, start, cpu_start = 0, time.perf_counter(), time.process_time()
    while (elapsed := time.perf_counter() - start) < seconds or n < 3:
        call()
        n += 1
    return n, elapsed, time.process_time() - cpu_start


def scaling(bundle: Path, photo: bytes, clients: list[int], *, seconds: float, extra: list[str], folder: Path,
            plain: bool = False, labelled: Sequence[tuple[bytes, str]] = ()
            ) -> tuple[list[dict[str, Any]], Any]:  # fmt: skip
    """One server (`plain`: the plain way's, see `start_server`), then each number of clients sending one
    JPEG per request to /predict for `seconds`. With `labelled` (photo, class) pairs, the server's accuracy
    on them too, sent by `max(clients)` clients (`accuracy` in the last row)."""
    pending = ["--max-pending", str(max(16, 2 * max(clients)))] if "--max-pending" not in extra else []
    port, log = free_port(), folder / f"scaling-{'plain' if plain else 'tlearn'}-server.log"
    server = start_server(bundle, port, [*extra, *pending], log, plain=plain)
    url = f"http://{HOST}:{port}/"
    one = [Kind("good: 1 JPEG", 1, True, multipart("predict", "file", [("a.jpg", photo, "image/jpeg")]))]
    rows = []
    try:
        wait_until_up(url, server, log)
        forward_pass = None if plain else httpx.get(url + "model", timeout=10).json().get("forward_pass")
        run_phase(url, one, clients=max(clients), seconds=2, max_requests=10_000, seed=0)  # warm-up: every shape
        for n in clients:
            pids = (server.pid, os.getpid())
            start, before = time.monotonic(), [cpu_seconds(p) for p in pids]
            outcomes = run_phase(url, one, clients=n, seconds=seconds, max_requests=100_000, seed=n)
            elapsed = time.monotonic() - start
            after = [cpu_seconds(p) for p in pids]
            spent = [None if a is None or b is None else b - a for a, b in zip(before, after, strict=True)]
            ok = latency(outcomes)
            inside = [o.server_seconds for o in outcomes if o.server_seconds is not None]
            rows.append({
                "clients": n,
                "requests": len(outcomes),
                "not_200": sum(1 for o in outcomes if o.status != "200"),
                "requests_per_second": round(ok["n"] / elapsed, 1),
                "p50_ms": ok.get("p50_ms"),
                "p95_ms": ok.get("p95_ms"),
                "server_p50_ms": round(float(np.median(inside)) * 1000, 1) if inside else None,
                # CPU per request, in ms of one core: the server's (all its threads) and this load generator's,
                # which shares the machine's cores with it
                "server_cpu_ms": round(spent[0] * 1000 / len(outcomes), 1) if spent[0] and outcomes else None,
                "clients_cpu_ms": round(spent[1] * 1000 / len(outcomes), 1) if spent[1] and outcomes else None,
            })  # fmt: skip
        if labelled and rows:
            rows[-1]["accuracy"] = served_accuracy(url, labelled, clients=max(clients))
    finally:
        stop_server(server)
    return rows, forward_pass


def served_accuracy(url: str, labelled: Sequence[tuple[bytes, str]], *, clients: int) -> float:
    """Share of the (photo, class) pairs whose answer's most probable class is theirs, sent to /predict
    by `clients` threads at once (a failed request counts as wrong)."""

    def right(pair: tuple[bytes, str]) -> bool:
        with httpx.Client(base_url=url, timeout=120) as http:
            res = http.post("predict", files=[("file", ("a.jpg", pair[0], "image/jpeg"))])
        if res.status_code != 200:
            return False
        body = res.json()
        return bool((body["predictions"][0]["class"] if "predictions" in body else body["class"]) == pair[1])

    with ThreadPoolExecutor(clients) as pool:
        return float(np.mean(list(pool.map(right, labelled))))


def scaling_result(engine: Engine, rows: list[dict[str, Any]], forward_pass: Any) -> dict[str, Any]:
    """The rows with their share of the engine's best throughput (at any batch size), and p95 against one
    client's p50; with the bounds no server on this machine passes: the share `Engine.most_share_possible`,
    and, for more than one client, the least mean latency over one client's p50 (`least_latency_ratio`: with
    that many requests in flight, Little's law makes the mean latency at least clients / the engine's best
    rate, even with decoding and HTTP free)."""
    best = engine.images_per_second[engine.best]
    single = next((r["p50_ms"] for r in rows if r["clients"] == 1), None)
    for r in rows:
        r["share_of_engine"] = round(r["requests_per_second"] / best, 3)
        r["p95_over_single"] = round(r["p95_ms"] / single, 2) if single and r["p95_ms"] else None
        least = r["clients"] * 1000 / best / single if single and r["clients"] > 1 else None
        r["least_latency_ratio"] = None if least is None else round(least, 2)
    return {"engine_images_per_second": engine.images_per_second, "engine_cpu_ms_per_image": engine.cpu_ms_per_image,
            "decode_cpu_ms": engine.decode_cpu_ms, "most_share_possible": round(engine.most_share_possible, 3),
            "engine_best": {"batch": int(engine.best), "images_per_second": best},
            "server_forward_pass": forward_pass, "single_request_ms": single, "clients": rows}  # fmt: skip


def print_scaling(result: dict[str, Any]) -> None:
    engine = result["engine_images_per_second"]
    print("\nengine alone, pre-decoded inputs: " + ", ".join(f"batch {b}: {v:g} img/s" for b, v in engine.items()))
    best = result["engine_best"]["batch"]
    print(f"CPU per image: the engine {result['engine_cpu_ms_per_image'][str(best)]:g} ms (batch {best}), decoding "
          f"the photo {result['decode_cpu_ms']:g} ms: a server reaches at most {result['most_share_possible']:.0%} "
          "of the engine")  # fmt: skip
    chosen = (result["server_forward_pass"] or {}).get("images", "?")
    print(f"the server's forward passes: {chosen} image(s); share below: of the engine's best")
    print(f"{'clients':>7} {'req/s':>7} {'of engine':>10} {'p50':>8} {'p95':>8} {'p95 / single':>13} "
          f"{'in server':>10} {'not 200':>8} {'CPU ms/req: server':>19} {'clients':>8}")  # fmt: skip
    for r in result["clients"]:
        ratio = f"{r['p95_over_single']:.2f}x" if r["p95_over_single"] else "-"
        inside = f"{r['server_p50_ms']:.0f} ms" if r.get("server_p50_ms") else "-"
        cpu = [f"{r[k]:.1f}" if r.get(k) is not None else "-" for k in ("server_cpu_ms", "clients_cpu_ms")]
        print(
            f"{r['clients']:>7} {r['requests_per_second']:>7} {r['share_of_engine']:>10.0%} {r['p50_ms']:>6.0f} ms "
            f"{r['p95_ms']:>5.0f} ms {ratio:>13} {inside:>10} {r['not_200']:>8} {cpu[0]:>19} {cpu[1]:>8}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, help="bundle to serve (default: train a tiny one here)")
    parser.add_argument("--builtin", action="store_true", help="train the default bundle on the built-in MobileNetV2")
    parser.add_argument("--scale", default="1,8,32", help='clients for the scaling figures; "" skips them')
    parser.add_argument("--scale-seconds", type=float, default=10, help="per number of clients")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30, help="length of the mixed phase")
    parser.add_argument("--baseline-seconds", type=float, default=10, help="good requests only first; 0 skips it")
    parser.add_argument("--max-requests", type=int, default=20_000, help="per phase, whatever the time")
    parser.add_argument("--server-args", default="", help='extra `tlearn serve` options, e.g. "--threads 1"')
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    scale = [int(n) for n in args.scale.split(",") if n.strip()]
    if args.clients < 1 or args.seconds < 0 or args.max_requests < 1 or any(n < 1 for n in scale):
        parser.error("--clients, --scale and --max-requests must be 1 or more, --seconds 0 or more.")

    with tempfile.TemporaryDirectory(prefix="tlearn-serve-load-") as tmp:
        folder = Path(tmp)
        bundle = args.bundle or tiny_bundle(folder, builtin=args.builtin)
        extra = args.server_args.split()
        max_mb = float(extra[extra.index("--max-mb") + 1]) if "--max-mb" in extra else 10.0
        photo, photos = jpeg((1600, 1200), 0), [jpeg((800, 600), i) for i in range(1, 5)]
        scaled = None
        if scale:
            print("Engine alone on pre-decoded inputs...", flush=True)
            chosen_engine = extra[extra.index("--engine") + 1] if "--engine" in extra else "auto"
            engine = engine_throughput(bundle, photo, engine=chosen_engine)
            print(f"Scaling: {', '.join(map(str, scale))} clients, {args.scale_seconds:g} s each...", flush=True)
            rows, forward_pass = scaling(bundle, photo, scale, seconds=args.scale_seconds, extra=extra, folder=folder)
            scaled = scaling_result(engine, rows, forward_pass)
            print_scaling(scaled)
        if args.seconds == 0:
            write(args.out, {"bundle": str(args.bundle or "tiny (trained here)"), "server_args": extra,
                             "scaling": scaled})  # fmt: skip
            return
        print("Making the requests (the 49 MP PNGs take a few seconds)...", flush=True)
        menu = kinds(photo, photos, max_mb)
        port = free_port()
        url = f"http://{HOST}:{port}/"
        log = folder / "server.log"
        server = start_server(bundle, port, extra, log)
        try:
            wait_until_up(url, server, log)
            with httpx.Client(base_url=url, timeout=60) as http:  # warm-up: first inference, pools started
                for _ in range(3):
                    menu[0].send(http)
            after_warm_up = rss_kb(server.pid) or 0
            baseline = None
            with RssSampler(server.pid) as sampler:
                if args.baseline_seconds > 0:
                    print(f"Baseline: good requests only, {args.baseline_seconds:g} s...", flush=True)
                    good = [k for k in menu if k.good]
                    outcomes = run_phase(url, good, clients=args.clients, seconds=args.baseline_seconds,
                                         max_requests=args.max_requests, seed=1)  # fmt: skip
                    baseline = summarise(outcomes, good, args.baseline_seconds)
                print(f"Mixed: good and hostile requests, {args.seconds:g} s...", flush=True)
                start = time.monotonic()
                outcomes = run_phase(url, menu, clients=args.clients, seconds=args.seconds,
                                     max_requests=args.max_requests, seed=2)  # fmt: skip
                mixed = summarise(outcomes, menu, time.monotonic() - start)
            hwm = proc_kb(server.pid, "VmHWM")
            try:
                up = httpx.get(url + "health", timeout=10).status_code == 200
            except httpx.HTTPError:
                up = False
        finally:
            stop_server(server)
        server_log = log.read_text(errors="replace")

    result = {
        "bundle": str(args.bundle) if args.bundle else "tiny (trained here)",
        "scaling": scaled,
        "clients": args.clients,
        "seconds": {"baseline": args.baseline_seconds, "mixed": args.seconds},
        "server_args": extra,
        "baseline": baseline,
        "mixed": mixed,
        "memory_mb": {
            "after_warm_up": round(after_warm_up / 1024),
            "peak": round((hwm or sampler.peak_kb) / 1024),
            "peak_source": "VmHWM of /proc" if hwm else "RSS sampled every 0.1 s",
        },
        "server_up_after": up,
        "server_tracebacks": server_log.count("Traceback"),
    }
    print_table(result)
    write(args.out, result)


def write(out: Path, result: dict[str, Any]) -> None:
    result = {"machine": machine(), **result}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps(result, indent=2) + "\n")
    tmp_out.replace(out)
    print(f"Wrote {out}")


if __name__ == "__main__":
    main()
