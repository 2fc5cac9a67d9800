"""The generated blocks of docs/benchmarks.md: each benchmark rewrites only the text between
its own two markers, and leaves the rest of the document as it is."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def write_block(section: str, begin: str, end: str, after: str | None = None,
                doc: Path = DOC) -> None:
    """Put `section` (which starts with `begin` and ends with `end`) in place of the
    document's block between those markers; the first time, after the line `after` when the
    document has it, else at its end.

    Args:
        section: the new block, its markers included.
        begin, end: the markers.
        after: a line of the document the block follows when it is new.
        doc: the document (a missing one is created).
    """
    section = section.rstrip("\n")
    text = doc.read_text() if doc.exists() else ""
    found = re.search(re.escape(begin) + ".*?" + re.escape(end), text, flags=re.S)
    if found:
        text = text[:found.start()] + section + text[found.end():]
    elif after is not None and after in text:
        text = text.replace(after, f"{after}\n\n{section}", 1)
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    doc.write_text(text)
