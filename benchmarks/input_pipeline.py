"""What feeding `fit` through dlmine's `EpochShuffled` costs, and cheaper ways to keep its order.

dlmine shuffles each epoch with `numpy.random.default_rng([seed, epoch]).permutation(n)` so that
a resumed run sees exactly the batches an uninterrupted one would. It feeds them to Keras as a
`keras.utils.PyDataset` (`dlmine/data/batches.py`), where plain Keras code calls
`fit(x, y, shuffle=True)` on arrays. This script trains the same model on the same data, in one
process, through several input pipelines, alternating them over `--rounds` rounds, and prints
the seconds inside `fit` of each (median over rounds), the process' CPU seconds in it (less
disturbed than wall time when other work shares the cores), the first epoch (which includes
tracing) apart from the later ones, and the final metrics: pipelines that feed the same batches
in the same order must end with the same loss.

Pipelines (`--variants`, each optionally suffixed `+spe=N` for `steps_per_execution`, `+jit`
for `jit_compile=True` (run in the first round only, being far slower on CPU) and `+tiny` for a
model of one Dense layer, whose `fit` time is mostly the cost of feeding the batches):
    arrays         fit(x, y, shuffle=True): plain Keras, Keras' own order
    arrays-keyed   one fit per epoch on x[perm], shuffle=False: dlmine's order, plain arrays
    pydataset      dlmine today: EpochShuffled and its callback, shuffle=False
    tfdata-keyed   a tf.data pipeline (TensorFlow backend) that draws the same permutation when
                   each epoch's iterator starts, gathers batches in C++ and prefetches them

Example:
    DLMINE_DATA_DIR=../shared/data python benchmarks/input_pipeline.py --rounds 3
"""

import argparse
import json
import statistics
import sys
import time

import keras
import numpy as np
from plain_keras_mnist import EpochTimes, build_model, load_data

from dlmine.data.batches import EpochShuffled

DEFAULT_VARIANTS = ["arrays", "arrays-keyed", "pydataset", "tfdata-keyed", "arrays+spe=8",
                    "pydataset+spe=8", "tfdata-keyed+spe=8", "arrays+jit",
                    "arrays+tiny", "pydataset+tiny", "tfdata-keyed+tiny", "arrays+tiny+spe=8",
                    "pydataset+tiny+spe=8", "tfdata-keyed+tiny+spe=8"]


class EpochKeyed(keras.callbacks.Callback):
    """Holds the epoch that begins, for pipelines that draw their order from it."""

    def __init__(self, first_epoch: int = 0):
        super().__init__()
        self.epoch = first_epoch

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch


def keyed_tf_dataset(x, y, batch_size: int, seed: int, clock: EpochKeyed):
    """Batches of (x, y) in the order `default_rng([seed, epoch]).permutation(n)`.

    Keras makes a new iterator at every epoch (no `steps_per_epoch`), after `on_epoch_begin`;
    the permutation is drawn then, once per epoch, in numpy, so it is exactly EpochShuffled's.
    """
    import tensorflow as tf

    n = len(x)
    x, y = tf.constant(x), tf.constant(y)

    def order():
        return np.random.default_rng([seed, clock.epoch]).permutation(n)

    def permutation(_):
        perm = tf.numpy_function(order, [], tf.int64, stateful=True)
        perm.set_shape([n])
        return perm

    def gather(rows):
        return tf.gather(x, rows), tf.gather(y, rows)

    indices = tf.data.Dataset.from_tensors(0).map(permutation).unbatch().batch(batch_size)
    return indices.map(gather, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def parse_variant(text: str) -> dict:
    name, *options = text.split("+")
    spec = {"name": text, "pipeline": name, "steps_per_execution": 1, "jit_compile": "auto",
            "tiny": False}
    for option in options:
        if option == "jit":
            spec["jit_compile"] = True
        elif option == "tiny":
            spec["tiny"] = True
        elif option.startswith("spe="):
            spec["steps_per_execution"] = int(option[4:])
        else:
            raise SystemExit(f"unknown option '{option}' in variant '{text}'")
    if name not in {"arrays", "arrays-keyed", "pydataset", "tfdata-keyed"}:
        raise SystemExit(f"unknown pipeline '{name}'")
    return spec


def run_variant(spec: dict, data, epochs: int, batch_size: int, seed: int) -> dict:
    (x, y), validation = data
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    if spec["tiny"]:
        model = keras.Sequential([keras.Input(shape=x.shape[1:]), keras.layers.Flatten(),
                                  keras.layers.Dense(y.shape[1], activation="softmax")])
        model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"],
                      jit_compile=spec["jit_compile"],
                      steps_per_execution=spec["steps_per_execution"])
    else:
        model = build_model(spec["jit_compile"], spec["steps_per_execution"])
    times = EpochTimes()
    common = {"validation_data": validation, "verbose": 0}
    started, cpu_started = time.perf_counter(), time.process_time()
    pipeline = spec["pipeline"]
    if pipeline == "arrays":
        history = model.fit(x, y, batch_size=batch_size, epochs=epochs, shuffle=True,
                            callbacks=[times], **common)
    elif pipeline == "arrays-keyed":
        for epoch in range(epochs):
            order = np.random.default_rng([seed, epoch]).permutation(len(x))
            history = model.fit(x[order], y[order], batch_size=batch_size, epochs=epoch + 1,
                                initial_epoch=epoch, shuffle=False, callbacks=[times], **common)
    elif pipeline == "pydataset":
        batches = EpochShuffled(x, y, batch_size, seed)
        history = model.fit(batches, epochs=epochs, shuffle=False,
                            callbacks=[batches.callback(), times], **common)
    else:
        clock = EpochKeyed()
        history = model.fit(keyed_tf_dataset(x, y, batch_size, seed, clock), epochs=epochs,
                            shuffle=False, callbacks=[clock, times], **common)
    fit_s, cpu_s = time.perf_counter() - started, time.process_time() - cpu_started
    last = {k: round(float(v[-1]), 6) for k, v in history.history.items()}
    return {"variant": spec["name"], "fit_s": fit_s, "cpu_s": cpu_s, "epoch_s": times.seconds,
            "final": last, "samples_per_s": len(x) * epochs / fit_s}


def summarize(results: list[dict], train_samples: int, epochs: int) -> list[dict]:
    rows = []
    for name in dict.fromkeys(r["variant"] for r in results):
        runs = [r for r in results if r["variant"] == name]
        fit = statistics.median(r["fit_s"] for r in runs)
        cpu = statistics.median(r["cpu_s"] for r in runs)
        later = [s for r in runs for s in r["epoch_s"][1:]]
        rows.append({
            "variant": name, "runs": len(runs), "fit_s": round(fit, 2), "cpu_s": round(cpu, 2),
            "fit_s_all": [round(r["fit_s"], 2) for r in runs],
            "first_epoch_s": round(statistics.median(r["epoch_s"][0] for r in runs), 2),
            "later_epoch_s": round(statistics.median(later), 2) if later else None,
            "samples_per_s": round(train_samples * epochs / fit, 1),
            "final": runs[-1]["final"],
        })
    for row in rows:
        tiny = "+tiny" in row["variant"]
        row["tiny"] = tiny
        base = next((r for r in rows if r["variant"] == ("arrays+tiny" if tiny else "arrays")), None)
        row["vs_arrays"] = round(row["fit_s"] / base["fit_s"], 3) if base else None
        row["cpu_vs_arrays"] = round(row["cpu_s"] / base["cpu_s"], 3) if base else None
    return rows


def print_table(rows: list[dict]) -> None:
    header = (f"{'variant':<22} {'fit s':>7} {'vs arrays':>9} {'CPU s':>6} {'vs arrays':>9} "
              f"{'epoch 1 s':>9} {'later s':>8} {'samples/s':>9}  final loss / val_loss")
    print(header)
    for r in rows:
        final = r["final"]
        print(f"{r['variant']:<22} {r['fit_s']:>7.2f} {r['vs_arrays'] or 0:>9.3f} "
              f"{r['cpu_s']:>6.2f} {r['cpu_vs_arrays'] or 0:>9.3f} "
              f"{r['first_epoch_s']:>9.2f} {r['later_epoch_s'] or 0:>8.2f} "
              f"{r['samples_per_s']:>9.0f}  {final.get('loss')} / {final.get('val_loss')}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--limit", type=int, default=20000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                        help="comma-separated, e.g. arrays,pydataset,tfdata-keyed+spe=8")
    parser.add_argument("--json", help="also write the rows and every run to this file")
    args = parser.parse_args(argv)
    specs = [parse_variant(v) for v in args.variants.split(",")]
    if keras.backend.backend() != "tensorflow":
        specs = [s for s in specs if s["pipeline"] != "tfdata-keyed"]
    train, validation, _ = load_data(args.limit, args.seed)
    results = []
    for round_index in range(args.rounds):
        shift = round_index % len(specs)  # rotate, so that no pipeline always runs first
        for spec in specs[shift:] + specs[:shift]:
            if spec["jit_compile"] is True and round_index > 0:
                continue  # XLA on CPU is several times slower: one round tells enough
            result = run_variant(spec, (train, validation), args.epochs, args.batch_size,
                                 args.seed)
            print(f"round {round_index + 1}: {result['variant']}: fit {result['fit_s']:.2f}s "
                  f"CPU {result['cpu_s']:.2f}s "
                  f"epochs {[round(s, 2) for s in result['epoch_s']]}", file=sys.stderr,
                  flush=True)
            results.append(result)
    rows = summarize(results, len(train[0]), args.epochs)
    print_table(rows)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"backend": keras.backend.backend(), "args": vars(args), "rows": rows,
                       "runs": results}, handle, indent=2)


if __name__ == "__main__":
    main()
