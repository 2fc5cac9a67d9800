"""`dlmine serve`: one run loaded once, answering JSON requests as `predict`, `recommend` and
`similar` answer on the command line.

`Service` holds the run (`Predictor`, and a `Recommender` for an interactions run) and turns
a request body into the rows those commands write; `Batcher` stacks the samples of requests
that arrive together into one model call. Nothing here knows HTTP: `dlmine.results.serve_http`
maps the exceptions to status codes (`BadRequest`, `DlmineError`: 422, `TooLarge`: 413,
`NotHere`: 404).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from dlmine.config.loading import suggest
from dlmine.console import Reporter
from dlmine.data.base import json_type
from dlmine.errors import DlmineError
from dlmine.results.predict import PREDICT_BATCH, Predictor
from dlmine.results.recommend import Recommender

WINDOW_S = 0.002  # the first request of a batch waits at most 2 ms for others to join it
MAX_BATCH = PREDICT_BATCH  # samples in one model call: `predict`'s batch
MAX_BODY = 16 * 2**20  # bytes of one request body (--max-body-mib)
REQUIRED = object()


class BadRequest(DlmineError):
    """A body that is not what the endpoint takes (422)."""


class TooLarge(DlmineError):
    """A body over the limit (413)."""


class NotHere(DlmineError):
    """An endpoint this kind of run does not answer (404)."""


class Batcher:
    """Stacks the samples of requests that arrive within `window` seconds into one call of
    `fn` (at most `max_samples`, unless one request alone has more); calls run one at a time
    in the model's thread, which `in_model_thread` shares.

    Args:
        fn: preprocessed inputs -> the model's outputs, one row per sample.
        window: how long the first request of a batch waits for others.
        max_samples: the most samples stacked into one call.
    """

    def __init__(self, fn: Callable[[np.ndarray], np.ndarray], window: float = WINDOW_S,
                 max_samples: int = MAX_BATCH):
        self.fn, self.window, self.max_samples = fn, window, max_samples
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="dlmine-model")
        self.queue: asyncio.Queue | None = None
        self.calls = self.samples = 0

    async def __call__(self, x: np.ndarray) -> np.ndarray:
        """The outputs of `x`, computed with whatever else arrived with it."""
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((x, future))
        return await future

    async def in_model_thread(self, fn: Callable, *args):
        """`fn(*args)` in the model's thread, between two batches."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def run(self) -> None:
        """Take batches off the queue until cancelled."""
        self.queue = asyncio.Queue()
        loop = asyncio.get_running_loop()
        carried = None
        while True:
            batch = [carried or await self.queue.get()]
            carried, total = None, len(batch[0][0])
            deadline = loop.time() + self.window
            while total < self.max_samples:
                item = await self._next(deadline - loop.time())
                if item is None:
                    break
                if total + len(item[0]) > self.max_samples:
                    carried = item
                    break
                batch.append(item)
                total += len(item[0])
            await self._call(batch)

    async def _next(self, timeout: float):
        if not self.queue.empty():
            return self.queue.get_nowait()
        if timeout <= 0:
            return None
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            return None

    async def _call(self, batch: list) -> None:
        try:
            outputs = await self.in_model_thread(self.fn, np.concatenate([x for x, _ in batch]))
        except Exception as exc:  # every request of the batch gets the failure
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        self.calls, self.samples = self.calls + 1, self.samples + len(outputs)
        start = 0
        for x, future in batch:
            if not future.done():  # a client that went away
                future.set_result(outputs[start:start + len(x)])
            start += len(x)

    def close(self) -> None:
        self.executor.shutdown(wait=True)


class Service:
    """A run loaded once, with `safe_mode=True` and its saved preprocessing, for `serve`.

    Args:
        run_dir: the run directory.
        checkpoint: `best` or `last`.

    Raises:
        DlmineError: what `predict` (or `recommend`) refuses: no run, the parent of `--folds`,
            an edited config, a checkpoint that does not load.
    """

    def __init__(self, run_dir: Path, checkpoint: str = "best"):
        self.predictor = Predictor(run_dir, checkpoint, warn=Reporter().warn, verb="serve")
        self.cfg = self.predictor.cfg
        self.recommender = None
        if self.cfg.dataset.name == "interactions":
            self.recommender = Recommender(self.predictor.run, checkpoint)
        else:
            self.classes = self.predictor.classes()  # the model is loaded now, not per request
        self.batcher = Batcher(self.predictor.outputs)

    @staticmethod
    def check_run(run_dir: Path, checkpoint: str) -> None:
        """What `Service` refuses but a checkpoint that does not load, without loading Keras
        (the supervisor of `--workers` processes)."""
        Predictor(run_dir, checkpoint, warn=Reporter().warn, verb="serve")

    def metadata(self) -> dict:
        """The run's name, task and classes, and what a client sends (`Source.input_schema`)."""
        predictor = self.predictor
        recommender = self.recommender is not None
        return {"name": self.cfg.name, "run": predictor.run.path.name,
                "checkpoint": predictor.checkpoint,
                "task": self.cfg.dataset.task if recommender else predictor.prep.task,
                "classes": [] if recommender else self.classes,
                "input": predictor.source.input_schema(predictor.prep),
                "endpoints": (["/recommend", "/similar"] if recommender else ["/predict"]),
                "batching": {"window_ms": WINDOW_S * 1000, "max_batch": MAX_BATCH}}

    def check(self, body: bytes) -> tuple[np.ndarray, list[str]]:
        """A `/predict` body -> (the preprocessed inputs, the warnings of `check_input`)."""
        if self.recommender is not None:
            raise NotHere("/predict takes no input for an interactions run: POST /recommend "
                          '{"users": [U]} or POST /similar {"item": I}')
        fields = read_body(body, {"inputs": (samples, REQUIRED)})
        warnings: list[str] = []
        prep = self.predictor.prep
        x = self.predictor.source.check_json(fields["inputs"], prep, "inputs", warnings.append)
        return prep.transform_x(x), warnings

    async def predict(self, body: bytes) -> dict:
        """`{"predictions": the rows of predict, "warnings": [...]}`."""
        x, warnings = await asyncio.to_thread(self.check, body)
        outputs = await self.batcher(x)
        return {"predictions": self.predictor.rows(outputs), "warnings": warnings}

    async def recommend(self, body: bytes) -> dict:
        """`{"recommendations": the rows of recommend}`."""
        recommender = self._recommender("/recommend")
        fields = read_body(body, {"users": (ids("users"), REQUIRED), "k": (count, 10),
                                  "include_seen": (flag, False),
                                  "cold_start": (one_of("error", "popular"), "error")})
        rows = await self.batcher.in_model_thread(
            recommender.recommend, fields["users"], fields["k"], fields["include_seen"],
            fields["cold_start"])
        return {"recommendations": rows}

    async def similar(self, body: bytes) -> dict:
        """`{"similar": the rows of similar}`."""
        recommender = self._recommender("/similar")
        fields = read_body(body, {"item": (an_id, REQUIRED), "k": (count, 10)})
        rows = await self.batcher.in_model_thread(recommender.similar, fields["item"], fields["k"])
        return {"similar": rows}

    def _recommender(self, path: str) -> Recommender:
        if self.recommender is None:
            raise NotHere(f"{path} answers for a recommender run (interactions); this run was "
                          f"trained on '{self.cfg.dataset.name}' data: POST /predict")
        return self.recommender


def read_body(raw: bytes, spec: dict) -> dict:
    """A JSON object with the keys of `spec` (`{key: (check, default or REQUIRED)}`), each
    value passed through its check.

    Raises:
        BadRequest: not JSON, not an object, an unknown key, a key missing, a bad value.
    """
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(f"the body is not JSON: {exc}") from None
    except RecursionError:
        raise BadRequest("the body nests deeper than it can be read; a request nests a few "
                         "levels") from None
    example = "{" + ", ".join(f'"{k}": ...' for k, (_, d) in spec.items() if d is REQUIRED) + "}"
    if not isinstance(body, dict):
        raise BadRequest(f"the body: expected a JSON object {example}; received {json_type(body)}")
    for key in body:
        if key not in spec:
            hint = suggest(key, list(spec))
            raise BadRequest(f"the body: unknown key '{key}'{hint}{' ' if hint else '; '}"
                             f"expected keys: {', '.join(spec)}")
    out = {}
    for key, (check, default) in spec.items():
        if key not in body:
            if default is REQUIRED:
                raise BadRequest(f"the body lacks '{key}': expected {example}")
            out[key] = default
        else:
            out[key] = check(body[key], key)
    return out


def samples(value, key: str) -> list:
    if not isinstance(value, list):
        raise BadRequest(f"{key}: expected a list of samples; received {json_type(value)}")
    if not value:
        raise BadRequest(f"{key}: an empty list; expected at least one sample")
    return value


def an_id(value, key: str) -> str:
    """A user or item id as the command line passes it: a string (a number is written out)."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise BadRequest(f"{key}: expected an id (a string or a whole number); received "
                         f"{json_type(value)}")
    return str(value)


def ids(key: str) -> Callable:
    def check(value, _key: str) -> list[str]:
        if not isinstance(value, list) or not value:
            what = "an empty list" if value == [] else json_type(value)
            raise BadRequest(f"{key}: expected a list of ids (at least one); received {what}")
        return [an_id(v, f"{key}[{i}]") for i, v in enumerate(value)]
    return check


def count(value, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        shown = json.dumps(value) if not isinstance(value, (dict, list)) else json_type(value)
        raise BadRequest(f"{key}: expected a whole number >= 1; received {shown}")
    return value


def flag(value, key: str) -> bool:
    if not isinstance(value, bool):
        raise BadRequest(f"{key}: expected true or false; received {json_type(value)}")
    return value


def one_of(*choices: str) -> Callable:
    def check(value, key: str) -> str:
        if value not in choices:
            shown = json.dumps(value) if not isinstance(value, (dict, list)) else json_type(value)
            raise BadRequest(f"{key}: expected one of: {', '.join(choices)}; received {shown}")
        return value
    return check
