"""`dlmine serve`: real servers in subprocesses on free loopback ports, queried over HTTP.

Five tiny runs (a table, arrays, text, images, a recommender) are trained once for the module
and each is served once; answers are compared with `dlmine predict` / `recommend` / `similar`
on the same inputs, row for row.
"""

from __future__ import annotations

import base64
import csv
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from dlmine.cli import main
from tests.conftest import TINY_CONFIG, write_config, write_tiny_npz
from tests.test_data_kinds import IMAGE_CONFIG, TABLE_CONFIG, TEXT_CONFIG, people, reviews
from tests.test_recommend import RANKING, planted

HOST = "127.0.0.1"
TEXT_LIMIT_MIB = 0.05  # the text server's --max-body-mib: 52,428 bytes


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def colour_images(folder: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for name, colour in (("red", (220, 20, 20)), ("blue", (20, 20, 220))):
        (folder / name).mkdir(parents=True)
        for i in range(12):
            pixels = np.clip(rng.normal(colour, 30, (15, 17, 3)), 0, 255).astype("uint8")
            Image.fromarray(pixels).save(folder / name / f"{i}.png")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class Server:
    """`dlmine serve RUN_DIR` in a subprocess on a free port."""

    def __init__(self, run_dir: Path, *options: str):
        self.port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "dlmine", "serve", str(run_dir), "--port", str(self.port),
             *options], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def wait_ready(self, timeout: float = 150) -> Server:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"the server exited: {self.process.stderr.read()}")
            try:
                if self.get("/health")[0] == 200:
                    return self
            except OSError:
                time.sleep(0.3)
        raise AssertionError("the server did not answer /health in time")

    def request(self, method: str, path: str, body: bytes | None = None, headers=None):
        connection = http.client.HTTPConnection(HOST, self.port, timeout=60)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return response.status, json.loads(response.read())
        finally:
            connection.close()

    def get(self, path: str):
        return self.request("GET", path)

    def post(self, path: str, payload):
        return self.request("POST", path, json.dumps(payload).encode(),
                            {"Content-Type": "application/json"})

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=60)
        return code


KINDS = ("table", "arrays", "text", "images", "recommender")
OPTIONS = {"table": ["--workers", "2"], "text": ["--max-body-mib", str(TEXT_LIMIT_MIB)]}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny run of each kind (one epoch), each served as soon as it is trained (the
    servers start while the next runs train), the table by two worker processes; SIGTERM at
    the end."""
    folder = tmp_path_factory.mktemp("serve")
    people(folder)
    write_tiny_npz(folder / "tiny.npz")
    reviews(folder)
    colour_images(folder / "imgs")
    planted(folder / "inter.csv", users=20, per_user=8)
    configs = {"table": TABLE_CONFIG.format(extra=""), "arrays": TINY_CONFIG,
               "text": TEXT_CONFIG.format(path="reviews.csv"), "images": IMAGE_CONFIG,
               "recommender": RANKING}
    started = {}
    try:
        for kind in KINDS:
            cfg = write_config(folder, configs[kind], f"{kind}.yaml")
            result = cli("train", cfg, "--run-dir", folder / kind, "--quiet", "--set",
                         "training.epochs=1")
            assert result.exit_code == 0, result.output
            started[kind] = Server(folder / kind, *OPTIONS.get(kind, []))
        yield folder, {kind: server.wait_ready() for kind, server in started.items()}
    finally:
        for server in started.values():
            server.stop()


@pytest.fixture(scope="module")
def runs(trained):
    return trained[0]


@pytest.fixture(scope="module")
def servers(trained):
    return trained[1]


def predicted(run_dir: Path, input_path: Path) -> list[dict]:
    """The rows `dlmine predict` writes as JSON Lines."""
    out = input_path.parent / f"{input_path.name}.jsonl"
    result = cli("predict", run_dir, input_path, "--output", out)
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in out.read_text().splitlines()]


def table_inputs() -> list[dict]:
    return [{"age": 30, "city": "paris", "income": 10.5}, {"age": 61, "city": "rome", "income": 90},
            {"age": 18, "city": "nice", "income": 0.25}]


def write_csv(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def same_rows(answer, status: int, rows: list[dict]) -> bool:
    """`answer` is (status, {"predictions": rows, "warnings": []}): every key, class and index
    equal, every number within float32 rounding (the server's process and the test's may sum
    a layer's products in another order, by their thread pools)."""
    def close(a, b):
        if isinstance(a, dict) and isinstance(b, dict):
            return a.keys() == b.keys() and all(close(a[k], b[k]) for k in a)
        if isinstance(a, list) and isinstance(b, list):
            return len(a) == len(b) and all(close(x, y) for x, y in zip(a, b, strict=True))
        if isinstance(a, float) or isinstance(b, float):
            return a == pytest.approx(b, rel=1e-6, abs=1e-7)
        return a == b

    assert answer[0] == status and close(answer[1], {"predictions": rows, "warnings": []}), (
        answer, rows)
    return True


def test_predict_answers_what_dlmine_predict_writes_for_each_kind(runs, servers, tmp_path):
    rows = table_inputs()
    table = servers["table"].post("/predict", {"inputs": rows})
    assert same_rows(table, 200, predicted(runs / "table", write_csv(tmp_path / "t.csv", rows)))
    with np.load(runs / "tiny.npz") as npz:
        x = npz["x_test"][:7]
    np.save(tmp_path / "x.npy", x)
    arrays = servers["arrays"].post("/predict", {"inputs": x.tolist()})
    assert same_rows(arrays, 200, predicted(runs / "arrays", tmp_path / "x.npy"))
    texts = ["great superb love the film", "awful poor the", "a film"]
    write_csv(tmp_path / "reviews.csv", [{"text": t} for t in texts])
    text = servers["text"].post("/predict", {"inputs": texts})
    assert same_rows(text, 200, predicted(runs / "text", tmp_path / "reviews.csv"))
    files = sorted((runs / "imgs" / "red").iterdir())[:3]
    (tmp_path / "imgs").mkdir()
    for file in files:
        (tmp_path / "imgs" / file.name).write_bytes(file.read_bytes())
    images = servers["images"].post("/predict", {"inputs": [base64.b64encode(f.read_bytes())
                                                            .decode() for f in files]})
    from_folder = predicted(runs / "images", tmp_path / "imgs")
    assert [row.pop("file") for row in from_folder] == [f.name for f in files]  # sorted names
    assert same_rows(images, 200, from_folder)
    assert len(images[1]["predictions"]) == 3


def test_recommend_and_similar_answer_what_the_commands_write(runs, servers, tmp_path):
    server = servers["recommender"]
    status, body = server.post("/recommend", {"users": ["u0", "u3"], "k": 4})
    (tmp_path / "users.txt").write_text("u0\nu3\n")
    out = tmp_path / "rec.jsonl"
    assert cli("recommend", runs / "recommender", "--users", tmp_path / "users.txt", "--k", "4",
               "-o", out).exit_code == 0
    assert (status, body) == (200, {"recommendations": [json.loads(line) for line in
                                                        out.read_text().splitlines()]})
    assert len(body["recommendations"]) == 8
    status, body = server.post("/similar", {"item": "i3", "k": 3})
    out = tmp_path / "similar.jsonl"
    assert cli("similar", runs / "recommender", "--item", "i3", "--k", "3", "-o",
               out).exit_code == 0
    assert (status, body) == (200, {"similar": [json.loads(line) for line in
                                                out.read_text().splitlines()]})
    cold = server.post("/recommend", {"users": ["nobody"], "k": 2, "cold_start": "popular"})
    assert cold[0] == 200 and [r["cold_start"] for r in cold[1]["recommendations"]] == [True, True]


def test_metadata_tells_what_a_client_sends(servers):
    table = servers["table"].get("/metadata")[1]
    assert (table["name"], table["run"], table["task"], table["classes"]) == (
        "table", "table", "classification", ["no", "yes"])
    assert table["input"]["columns"] == {"age": "numeric", "city": "categorical",
                                         "income": "numeric"}
    assert table["batching"] == {"window_ms": 2.0, "max_batch": 256}
    arrays = servers["arrays"].get("/metadata")[1]
    assert arrays["input"]["sample_shape"] == [6, 6] and arrays["classes"] == ["red", "green",
                                                                               "blue"]
    assert servers["text"].get("/metadata")[1]["input"]["kind"] == "text"
    images = servers["images"].get("/metadata")[1]["input"]
    assert (images["image_size"], images["color_mode"]) == ([12, 12], "rgb")
    recommender = servers["recommender"].get("/metadata")[1]
    assert recommender["endpoints"] == ["/recommend", "/similar"]
    assert recommender["input"]["kind"] == "interactions" and recommender["input"]["users"] == 20
    schema = servers["table"].get("/openapi.json")[1]
    assert {"/health", "/metadata", "/predict", "/recommend", "/similar"} <= set(schema["paths"])


def test_concurrent_requests_are_stacked_into_fewer_model_calls(runs, servers):
    server = servers["arrays"]
    with np.load(runs / "tiny.npz") as npz:
        x = npz["x_test"]
    alone = [server.post("/predict", {"inputs": [sample.tolist()]})[1]["predictions"][0]
             for sample in x[:16]]
    before = server.get("/health")[1]
    answers: dict = {}
    barrier = threading.Barrier(16)

    def client(i: int) -> None:
        barrier.wait()
        answers[i] = server.post("/predict", {"inputs": [x[i].tolist()]})

    threads = [threading.Thread(target=client, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    after = server.get("/health")[1]
    assert after["samples"] - before["samples"] == 16
    assert after["batches"] - before["batches"] < 16  # some requests shared a model call
    for i in range(16):
        status, body = answers[i]
        assert status == 200 and body["predictions"][0]["class"] == alone[i]["class"]
        got = list(body["predictions"][0]["probabilities"].values())
        np.testing.assert_allclose(got, list(alone[i]["probabilities"].values()), atol=1e-6)


def test_bad_input_gets_the_message_of_dlmine_predict(runs, servers, tmp_path):
    wrong = np.zeros((2, 6, 5), dtype="float32")
    np.save(tmp_path / "wrong.npy", wrong)
    refused = cli("predict", runs / "arrays", tmp_path / "wrong.npy")
    status, body = servers["arrays"].post("/predict", {"inputs": wrong.tolist()})
    assert status == 422
    assert f"Error: {body['detail']}\n" == refused.stderr.replace(str(tmp_path / "wrong.npy"),
                                                                  "inputs")
    assert body["detail"] == ("inputs: expected samples of shape (6, 6) (an array of shape (N, 6, "
                              "6), as preprocessing.json says); received an array of shape (2, "
                              "6, 5), samples of shape (6, 5)")
    (tmp_path / "bad.csv").write_text("age,town\n30,paris\n")
    refused = cli("predict", runs / "table", tmp_path / "bad.csv")
    status, body = servers["table"].post("/predict", {"inputs": [{"age": 30, "town": "paris"}]})
    assert (status, f"Error: {body['detail']}\n") == (
        422, refused.stderr.replace(str(tmp_path / "bad.csv"), "inputs[0]"))


BAD = [
    ("arrays", "/predict", {"inputs": [[[0.0] * 6] * 6, [[0.0] * 5] * 6]}, 422,
     "inputs[1]: a nested list of shape (6, 5), but inputs[0] has shape (6, 6); expected every "
     "sample of one shape"),
    ("arrays", "/predict", {"inputs": [[["a"] * 6] * 6]}, 422,
     "inputs[0, 0, 0] is a string ('a'); expected a number"),
    ("arrays", "/predict", {"inputs": [[[0.0] * 5 + [None]] * 6]}, 422,
     "inputs[0, 0, 5] is null; expected a number"),
    ("arrays", "/predict", {"inputs": []}, 422,
     "inputs: an empty list; expected at least one sample"),
    ("arrays", "/predict", {"input": [1]}, 422,
     "the body: unknown key 'input'; did you mean 'inputs'? expected keys: inputs"),
    ("arrays", "/predict", {}, 422, 'the body lacks \'inputs\': expected {"inputs": ...}'),
    ("arrays", "/predict", [1, 2], 422,
     'the body: expected a JSON object {"inputs": ...}; received a list'),
    ("table", "/predict", {"inputs": [{"age": "old", "city": "paris", "income": 1}]}, 422,
     "inputs: column 'age', row 0: 'old' is not a number (the column is numeric)"),
    ("table", "/predict", {"inputs": [{"age": 3, "city": "paris", "income": 1}, "x"]}, 422,
     "inputs[1]: expected an object of the columns age, city, income; received a string"),
    ("table", "/predict", {"inputs": [{"age": None, "city": "paris", "income": 1}]}, 422,
     "inputs: column 'age', row 0: the value is missing (this run was trained with "
     "dataset.missing: error)"),
    ("text", "/predict", {"inputs": ["fine", 3]}, 422,
     "inputs[1]: expected a text (a string); received a number"),
    ("images", "/predict", {"inputs": ["not base64!"]}, 422,
     "inputs[0]: not base64 (Only base64 data is allowed); expected an image file as a base64 "
     "string"),
    ("images", "/predict", {"inputs": [base64.b64encode(b"GIF89a no").decode()]}, 422,
     "inputs[0]: not a readable image (cannot identify image file <_io.BytesIO object at "),
    ("recommender", "/recommend", {"users": ["nobody"]}, 422,
     "user 'nobody' is not in this run's training data (20 users, e.g. 'u0', 'u1', 'u10'); "
     "--cold-start popular recommends the most popular items instead"),
    ("recommender", "/recommend", {"users": ["u0"], "k": 0}, 422,
     "k: expected a whole number >= 1; received 0"),
    ("recommender", "/recommend", {"users": ["u0"], "cold_start": "never"}, 422,
     'cold_start: expected one of: error, popular; received "never"'),
    ("recommender", "/recommend", {"users": [{"id": 1}]}, 422,
     "users[0]: expected an id (a string or a whole number); received an object"),
    ("recommender", "/similar", {"item": "zzz"}, 422,
     "item 'zzz' is not in this run's training data (55 items, e.g. 'i0', 'i1', 'i10')"),
    ("recommender", "/predict", {"inputs": [1]}, 404,
     '/predict takes no input for an interactions run: POST /recommend {"users": [U]} or POST '
     '/similar {"item": I}'),
    ("table", "/similar", {"item": "i1"}, 404,
     "/similar answers for a recommender run (interactions); this run was trained on 'csv' "
     "data: POST /predict"),
]


def test_every_bad_request_gets_its_status_and_message_and_the_server_goes_on(servers):
    for kind, path, payload, status, message in BAD:
        got = servers[kind].post(path, payload)
        assert got[0] == status, (kind, path, payload, got)
        assert got[1]["detail"].startswith(message), (kind, path, payload, got)
    not_json = servers["table"].request("POST", "/predict", b'{"inputs": [')
    assert not_json == (422, {"detail": "the body is not JSON: Expecting value: line 1 column "
                                        "13 (char 12)"})
    deep = servers["table"].request("POST", "/predict", b"[" * 100_000 + b"]" * 100_000)
    assert deep == (422, {"detail": "the body nests deeper than it can be read; a request nests "
                                    "a few levels"})
    for server in servers.values():
        assert server.get("/health")[1]["status"] == "ok"


def test_a_body_over_the_limit_is_413(servers):
    server, limit = servers["text"], int(TEXT_LIMIT_MIB * 2**20)
    big = json.dumps({"inputs": ["word " * 12_000]}).encode()
    assert server.request("POST", "/predict", big) == (413, {"detail": (
        f"the body is {len(big)} bytes; the limit is {limit} bytes (dlmine serve "
        "--max-body-mib)")})
    chunks = (big[i:i + 8192] for i in range(0, len(big), 8192))  # no Content-Length
    connection = http.client.HTTPConnection(HOST, server.port, timeout=60)
    connection.request("POST", "/predict", body=chunks, encode_chunked=True)
    response = connection.getresponse()
    assert (response.status, json.loads(response.read())) == (413, {"detail": (
        f"the body is over {limit} bytes, the limit (dlmine serve --max-body-mib)")})
    connection.close()
    assert server.post("/predict", {"inputs": ["great film"]})[0] == 200


def test_sigterm_answers_the_request_in_flight_then_exits_cleanly(servers):
    server = servers["arrays"]
    body = json.dumps({"inputs": np.zeros((3, 6, 6)).tolist()}).encode()
    with socket.create_connection((HOST, server.port), timeout=60) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body[:10])
        time.sleep(0.5)  # the request is in flight: its headers are read, its body is not
        server.process.send_signal(signal.SIGTERM)
        time.sleep(1.0)
        assert server.process.poll() is None  # waiting for the request in flight
        sock.sendall(body[10:])
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
    head, _, payload = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert len(json.loads(payload)["predictions"]) == 3
    assert server.process.wait(timeout=30) == 0
    assert server.process.stderr.read().endswith(
        "stopped by SIGTERM; every request in flight was answered\n")


def test_workers_are_processes_of_their_own_and_stop_together(servers):
    server = servers["table"]  # --workers 2
    pid = server.process.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    workers = [child for child in children
               if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes()]
    assert len(workers) == 2
    assert str(server.get("/health")[1]["pid"]) in workers
    assert server.stop() == 0
    assert not any(Path(f"/proc/{child}").exists() for child in workers)
    assert server.process.stderr.read().endswith(
        "stopped by a signal; every request in flight was answered\n")


def test_serve_without_the_extra_says_what_to_install(runs, monkeypatch):
    monkeypatch.setitem(sys.modules, "fastapi", None)  # `import fastapi` fails
    result = cli("serve", runs / "table")
    assert (result.exit_code, result.stderr) == (
        1, "Error: dlmine serve needs fastapi: pip install 'dlmine[serve]'\n")


def test_a_busy_port_or_an_unknown_host_is_one_error_before_the_model_loads(runs):
    import socket

    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = cli("serve", runs / "table", "--port", port)
        assert (result.exit_code, result.stderr) == (1, (
            f"Error: cannot serve on {HOST}:{port}: the port is already in use (another "
            "server?); choose another --port\n"))
    unknown = cli("serve", runs / "table", "--host", "no-such-host.invalid", "--port", port)
    assert unknown.exit_code == 1
    assert unknown.stderr.startswith("Error: --host no-such-host.invalid: cannot be resolved (")
    assert unknown.stderr.endswith("); give an address of this machine, such as 127.0.0.1 or "
                                   "0.0.0.0\n")


def test_serve_refuses_what_predict_refuses(tmp_path):
    result = cli("serve", tmp_path / "nothing")
    assert result.exit_code == 2 and result.stderr.startswith("Error: ")
    assert os.fspath(tmp_path / "nothing") in result.stderr
