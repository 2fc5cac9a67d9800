"""`dlmine serve` under a bounded load on loopback, against `model.predict` in-process.

Trains two runs (`configs/breast_cancer_mlp.yaml` for 2 epochs, a table of 30 numeric
columns, and `configs/mnist_cnn.yaml` on 2,000 images for 1 epoch: the speed of a prediction
does not depend on the training), serves each with `dlmine serve` on 127.0.0.1, and runs
`--clients` threads (8) for `--seconds` (20) each, every client sending one sample per request
over its own keep-alive connection. Reports requests/s, p50 / p99 latency and errors, then
calls `Predictor.outputs` (`model.predict`, as `dlmine predict` does) in this process on the
same one-sample batches for the same number of seconds: the ratio is the service's
requests/s over the in-process calls/s. Also the CPU the rest of the machine used meanwhile
(from /proc/stat: a shared machine). Regenerates the serve section of `docs/benchmarks.md`.

    .venv/bin/python benchmarks/serve.py               # ~3 minutes on 2 cores
    .venv/bin/python benchmarks/serve.py --seconds 5 --no-doc
"""

from __future__ import annotations

import argparse
import csv
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from docblock import write_block  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # this process loads a model too
ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- serve:begin -->", "<!-- serve:end -->"
AFTER = "<!-- end of explain-vs-sklearn -->"
HOST = "127.0.0.1"
RUNS = {  # name -> (config, --set overrides)
    "breast_cancer_mlp (table)": ("breast_cancer_mlp.yaml", ["training.epochs=2"]),
    "mnist_cnn (arrays)": ("mnist_cnn.yaml", ["dataset.limit=2000", "training.epochs=1"]),
}


def dlmine(*args: str) -> list[str]:
    return [sys.executable, "-m", "dlmine", *args]


def train(config: str, overrides: list[str], run_dir: Path) -> None:
    sets = [a for o in overrides for a in ("--set", o)]
    subprocess.run(dlmine("train", str(ROOT / "configs" / config), "--run-dir", str(run_dir),
                          "--quiet", *sets), check=True, stdout=subprocess.DEVNULL)


def samples(config: str) -> list:
    """256 raw samples as a client sends them: table rows as objects, MNIST images as lists."""
    if config.startswith("breast"):
        with open(ROOT / "configs" / "data" / "breast_cancer.csv") as handle:
            rows = list(csv.DictReader(handle))[:256]
        return [{k: float(v) for k, v in row.items() if k != "diagnosis"} for row in rows]
    folder = Path(os.environ.get("DLMINE_DATA_DIR", ROOT.parent / "shared" / "data"))
    with np.load(folder / "mnist.npz") as npz:
        return npz["x_test"][:256].tolist()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def busy_seconds() -> float:
    """CPU seconds the whole machine spent busy since boot (/proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def process_seconds(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")


def start(run_dir: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    server = subprocess.Popen(dlmine("serve", str(run_dir), "--port", str(port)),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection(HOST, port, timeout=5)
            connection.request("GET", "/health")
            if connection.getresponse().status == 200:
                return server, port
        except OSError:
            time.sleep(0.5)
    server.kill()
    raise SystemExit("dlmine serve did not answer /health in 180 s")


def load(port: int, inputs: list, clients: int, seconds: float) -> dict:
    """`clients` threads, each posting one sample per request until `seconds` have passed."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client(k: int) -> None:
        connection = http.client.HTTPConnection(HOST, port, timeout=30)
        mine, bad, i = [], 0, k
        while time.monotonic() < stop:
            body = json.dumps({"inputs": [inputs[i % len(inputs)]]})
            began = time.perf_counter()
            try:
                connection.request("POST", "/predict", body, {"Content-Type": "application/json"})
                response = connection.getresponse()
                ok = response.status == 200 and len(json.loads(response.read())["predictions"]) == 1
            except (OSError, http.client.HTTPException, ValueError):
                ok = False
                connection = http.client.HTTPConnection(HOST, port, timeout=30)
            mine.append(time.perf_counter() - began)
            bad += not ok
            i += clients
        with lock:
            latencies.extend(mine)
            errors[0] += bad

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    ms = np.array(latencies) * 1000
    return {"requests": len(ms), "errors": errors[0], "rps": len(ms) / wall,
            "p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99))}


def in_process(run_dir: Path, inputs: list, seconds: float) -> dict:
    """Calls per second, one preprocessed sample at a time, of Keras' `model.predict` and of
    `Predictor.outputs` (`predict_on_batch`, what `dlmine predict` and `serve` call)."""
    from dlmine.results.predict import PREDICT_BATCH, Predictor

    predictor = Predictor(run_dir)
    source, prep, model = predictor.source, predictor.prep, predictor.model
    batches = [prep.transform_x(source.check_json([x], prep, "inputs")) for x in inputs]
    calls = {"keras_predict": lambda x: model.predict(x, batch_size=PREDICT_BATCH, verbose=0),
             "outputs": predictor.outputs}
    rates = {}
    for name, call in calls.items():
        call(batches[0])  # the first call builds the predict function
        done, began = 0, time.perf_counter()
        while time.perf_counter() - began < seconds:
            call(batches[done % len(batches)])
            done += 1
        rates[name] = done / (time.perf_counter() - began)
    return rates


def measure(name: str, config: str, overrides: list[str], folder: Path, args) -> dict:
    run_dir = folder / config.split(".")[0]
    train(config, overrides, run_dir)
    inputs = samples(config)
    server, port = start(run_dir)
    try:
        load(port, inputs, args.clients, 2)  # warm-up: the model's first calls
        machine, own = busy_seconds(), process_seconds(server.pid) + time.process_time()
        row = load(port, inputs, args.clients, args.seconds)
        others = (busy_seconds() - machine) - (process_seconds(server.pid)
                                                + time.process_time() - own)
    finally:
        server.terminate()
        server.wait(timeout=60)
    row["others"] = max(0.0, others / args.seconds)
    row.update(in_process(run_dir, inputs, args.seconds / 2))
    row["name"] = name
    print(json.dumps(row), flush=True)
    return row


def document(rows: list[dict], args) -> str:
    lines = [BEGIN, "## dlmine serve under load", "",
             f"`python benchmarks/serve.py`: {args.clients} client threads for {args.seconds:g} s "
             "against `dlmine serve` on 127.0.0.1 (one process), one sample per request, each "
             "client on its own keep-alive connection, on this "
             f"{os.cpu_count()}-core machine, which is shared with other work: `others` is the "
             "CPU (in cores) the rest of the machine used during the load. The clients run on "
             "the same cores as the server. In-process, one process calls the model on the "
             "same one-sample batches, one after the other: Keras' `model.predict(x, "
             "batch_size=256)` and `Predictor.outputs` (`predict_on_batch`, what `dlmine "
             "predict` and `serve` call, with the same numbers); each `ratio` is the service's "
             "requests/s over those calls/s.", "",
             "| run | requests | requests/s | p50 ms | p99 ms | errors | `model.predict` calls/s "
             "| ratio | `predict_on_batch` calls/s | ratio | others |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['requests']} | {r['rps']:.0f} | {r['p50']:.1f} | "
                     f"{r['p99']:.1f} | {r['errors']} | {r['keras_predict']:.1f} | "
                     f"{r['rps'] / r['keras_predict']:.1f} | {r['outputs']:.0f} | "
                     f"{r['rps'] / r['outputs']:.2f} | {r['others']:.2f} |")
    lines.append(END)
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--no-doc", action="store_true", help="print only; leave the doc alone")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure(name, config, overrides, Path(tmp), args)
                for name, (config, overrides) in RUNS.items()]
    section = document(rows, args)
    print(section)
    if not args.no_doc:
        write_block(section, BEGIN, END, after=AFTER)


if __name__ == "__main__":
    main()
