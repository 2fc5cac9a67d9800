"""Fetch MovieLens-100K from the `recbole==1.2.1` wheel into data/movielens/ (git-ignored).

Its licence forbids redistribution, so it is never committed: `make movielens` runs this
script, which downloads the wheel with pip, reads `recbole/dataset_example/ml-100k/`
from it (a zip) and writes `ratings.csv` (user, item, rating, timestamp), `users.csv`
and `items.csv`.
"""

from __future__ import annotations

import csv
import io
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL = "recbole==1.2.1"
INSIDE = "recbole/dataset_example/ml-100k/ml-100k"
OUT = Path(__file__).resolve().parent.parent / "data" / "movielens"


def atomic(path: str) -> list[tuple[str, list[str]]]:
    """The columns (name without its `:type`) and rows of a RecBole atomic file."""
    lines = path.splitlines()
    header = [c.split(":")[0] for c in lines[0].split("\t")]
    return header, [line.split("\t") for line in lines[1:] if line]


def main(out: Path = OUT) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", WHEEL,
                        "-d", tmp], check=True)
        wheel = next(Path(tmp).glob("recbole-*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            files = {ext: zf.read(f"{INSIDE}.{ext}").decode("latin-1")
                     for ext in ("inter", "user", "item")}
    renames = {"user_id": "user", "item_id": "item"}
    for ext, name in (("inter", "ratings"), ("user", "users"), ("item", "items")):
        header, rows = atomic(files[ext])
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow([renames.get(c, c) for c in header])
        writer.writerows(rows)
        (out / f"{name}.csv").write_text(buffer.getvalue(), encoding="utf-8")
        print(f"{out / name}.csv: {len(rows)} rows", file=sys.stderr)


if __name__ == "__main__":
    main()
