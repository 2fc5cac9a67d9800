"""Texts -> token ids or bags of words, with a vocabulary fitted on the training split.

Pure Python and numpy, so no string reaches Keras and text trains on every backend.
Standardizing follows Keras' `TextVectorization`: strip HTML tags (`<br />`), lowercase,
strip punctuation (or split it off, each mark a word), split on whitespace; n-grams are the
words joined by one space. The vocabulary keeps the `max_tokens - 2` most frequent terms of
the training split (ties in alphabetical order), after id 0 (padding) and id 1 (terms never
seen in training). Its state (terms, document frequencies) is plain JSON, saved in
`preprocessing.json`.

`output_mode` says what one text becomes:
    int        `sequence_length` ids, cut at the end, padded with 0 at the end;
    multi_hot  `max_tokens` floats, one per id (those past the vocabulary stay 0): 1 when
               the term occurs;
    count      how often it occurs;
    tf_idf     count x idf (idf = ln((1 + texts) / (1 + texts with the term)) + 1), each
               row scaled to unit length (scikit-learn's `TfidfVectorizer` defaults); terms
               outside the vocabulary (id 1) count for nothing, as scikit-learn drops them;
               `sublinear_tf` takes 1 + ln(count) for the count.
A text with no term (empty, or tags only, or punctuation only unless it is split into
words) is the unseen-term id alone, so that a masked sequence always holds one step; in a
bag that id counts as any unseen term: 1 for `multi_hot` and `count`, nothing for `tf_idf`.
"""

from __future__ import annotations

import functools
import re
import string
import sys
import unicodedata
from collections import Counter

import numpy as np

PAD, OOV = "", "[UNK]"
HTML_TAG = re.compile(r"<[^>]{0,200}>")
PUNCTUATION = re.compile("[" + re.escape(string.punctuation) + "]")
BAG_MODES = ("multi_hot", "count", "tf_idf")
APOSTROPHES = "'\u2019"  # ' and its typographic form: removed, so don't and don’t are dont


@functools.cache
def split_marks() -> re.Pattern:
    """What `strip_punctuation: split` makes words of: ASCII punctuation and every Unicode
    punctuation mark (categories P*: “ ” … — ¡ ...), apostrophes aside."""
    marks = {chr(i) for i in range(sys.maxunicode + 1) if unicodedata.category(chr(i))[0] == "P"}
    marks = (marks | set(string.punctuation)) - set(APOSTROPHES)
    return re.compile("[" + re.escape("".join(sorted(marks))) + "]")


class Vocabulary:
    """The terms of the training texts and how a text becomes model input.

    Args:
        cfg: the `preprocessing.text` section (a `TextConfig`).
        state: a fitted state (`state()`), or None to fit one.

    Example:
        >>> vocab = Vocabulary(cfg.preprocessing.text).fit(["a good film", "a bad film"])
        >>> vocab.transform(["a good one"])  # ids: 'one' was never seen
    """

    def __init__(self, cfg, state: dict | None = None):
        self.cfg = cfg
        self.terms: list[str] = list(state["terms"]) if state else []
        self.idf = np.asarray(state["idf"], dtype="float32") if state and state.get("idf") \
            else None
        self.index = {t: i for i, t in enumerate(self.terms)}

    def standardize(self, text: str) -> str:
        if self.cfg.strip_html:
            text = HTML_TAG.sub(" ", text)
        if self.cfg.lowercase:
            text = text.lower()
        if self.cfg.strip_punctuation == "split":
            text = split_marks().sub(r" \g<0> ", re.sub(f"[{APOSTROPHES}]", "", text))
        elif self.cfg.strip_punctuation:
            text = PUNCTUATION.sub("", text)
        return text

    def tokens(self, text: str) -> list[str]:
        """The words of `text`, then its n-grams up to `ngrams` words."""
        words = self.standardize(text).split()
        out = list(words)
        for n in range(2, (self.cfg.ngrams or 1) + 1):
            out.extend(" ".join(words[i:i + n]) for i in range(len(words) - n + 1))
        return out

    def fit(self, texts) -> Vocabulary:
        """Keep the most frequent terms of `texts` (the training split only)."""
        counts: Counter = Counter()
        documents: Counter = Counter()
        for text in texts:
            tokens = self.tokens(str(text))
            counts.update(tokens)
            documents.update(set(tokens))
        kept = sorted(counts, key=lambda t: (-counts[t], t))[: max(0, self.cfg.max_tokens - 2)]
        self.terms = [PAD, OOV, *kept]
        self.index = {t: i for i, t in enumerate(self.terms)}
        self.idf = None
        if self.cfg.output_mode == "tf_idf":
            n = len(texts)
            df = np.array([0, 0] + [documents[t] for t in kept], dtype="float64")
            self.idf = (np.log((1 + n) / (1 + df)) + 1).astype("float32")
            self.idf[:2] = 0.0  # padding never occurs; unseen terms are dropped
        return self

    def size(self) -> int:
        """The number of ids: padding, the unseen-term id and the kept terms."""
        return len(self.terms)

    def output_shape(self) -> tuple:
        """Known from the config alone, so the model is built before the vocabulary is fitted."""
        if self.cfg.output_mode == "int":
            return (self.cfg.sequence_length,)
        return (self.cfg.max_tokens,)

    def ids(self, text: str) -> list[int]:
        """The ids of the text's terms; the unseen-term id alone for a text without any."""
        return [self.index.get(t, 1) for t in self.tokens(text)] or [1]

    def transform(self, texts) -> np.ndarray:
        """`int32` ids of shape (N, sequence_length), or `float32` bags of (N, max_tokens)."""
        mode = self.cfg.output_mode
        if mode == "int":
            length = self.cfg.sequence_length
            out = np.zeros((len(texts), length), dtype="int32")
            for row, text in enumerate(texts):
                ids = self.ids(str(text))[:length]
                out[row, : len(ids)] = ids
            return out
        out = np.zeros((len(texts), self.cfg.max_tokens), dtype="float32")
        for row, text in enumerate(texts):
            ids, counts = np.unique(np.asarray(self.ids(str(text)), "int64"),
                                    return_counts=True)
            out[row, ids] = 1.0 if mode == "multi_hot" else counts
        if mode == "tf_idf":
            if self.cfg.sublinear_tf:
                counted = out > 0
                out[counted] = 1.0 + np.log(out[counted])
            out[:, : self.size()] *= self.idf
            norms = np.linalg.norm(out, axis=1, keepdims=True)
            out /= np.where(norms > 0, norms, 1.0)
        return out

    def state(self) -> dict:
        return {"terms": self.terms, "idf": None if self.idf is None else self.idf.tolist()}
