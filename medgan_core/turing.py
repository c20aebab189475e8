"""A visual Turing test: readers judge real and generated images, one at a time, as "real" or "synthetic".

Plain functions, so the scoring is testable without a browser; :func:`medgan_core.widgets.turing_test` is the widget.

- :func:`build_trials` draws real and generated images into one seeded random order (the same for every reader).
- :class:`AnswerLog` appends each answer to ``<folder>/turing-<reader>.csv`` as it is given (flushed, so closing the
  notebook loses nothing) and tells where a returning reader continues.
- :func:`summarize` gives accuracy with an exact binomial 95% CI, sensitivity (synthetic called synthetic),
  specificity (real called real), per-model "taken for real" rates and the images most often taken for real.
"""
from __future__ import annotations

import csv
import datetime as dt
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import pandas as pd
import torch
from scipy.stats import binomtest

from .data import ImageSet

REAL = "real"
ANSWERS = ("real", "synthetic")
COLUMNS = ["trial", "source", "answer", "correct", "confidence", "class_guess", "reader", "answered_at"]


@dataclass
class Trials:
    """The images shown, in order, and where each came from."""

    images: torch.Tensor  # (N, C, H, W) uint8, in display order
    table: pd.DataFrame  # one row per trial: trial, source ("real" or a model name), index in its set, class

    def __len__(self) -> int:
        return len(self.table)


def build_trials(real: ImageSet, synthetic: Mapping[str, ImageSet], *, n_real: int = 50, n_per_model: int = 50,
                 seed: int = 0) -> Trials:
    """Real and generated images in one seeded random order.

    Args:
        real: real images (the test split: images no model was trained on).
        synthetic: model name -> its generated images (e.g. ``Comparison.synthetic`` without the real row).
        n_real: real images shown (at most all of them).
        n_per_model: images shown per model.
        seed: fixes the picks and the order (the same for every reader).
    Returns:
        The :class:`Trials`.
    Raises:
        ValueError: for no model, an image size that differs between sets, or a model named ``"real"``.
    """
    if not synthetic:
        raise ValueError("a Turing test needs at least one model's images")
    if REAL in synthetic:
        raise ValueError(f"no model may be called {REAL!r}: it marks the real images")
    shapes = {name: tuple(s.images.shape[1:]) for name, s in synthetic.items()}
    if len({tuple(real.images.shape[1:]), *shapes.values()}) != 1:
        raise ValueError(f"every image must have one size: real {tuple(real.images.shape[1:])}, models {shapes}")
    generator = torch.Generator().manual_seed(seed)
    rows, images = [], []
    for source, data, n in [(REAL, real, n_real), *((name, s, n_per_model) for name, s in synthetic.items())]:
        picks = torch.randperm(len(data), generator=generator)[:n]
        for index in picks.tolist():
            label = int(data.labels[index])
            rows.append({"source": source, "index": index, "class": data.class_names[label]})
            images.append(data.images[index])
    order = torch.randperm(len(rows), generator=generator).tolist()
    table = pd.DataFrame([rows[i] for i in order])
    table.insert(0, "trial", range(len(table)))
    return Trials(torch.stack([images[i] for i in order]), table)


class AnswerLog:
    """One reader's answers, appended to a CSV as they are given.

    Args:
        folder: where answer files live (``turing-<reader>.csv``).
        reader: the reader's name (letters, digits, ``-`` and ``_``).
        trials: the trials being answered (an existing file must be for the same trials).
    Raises:
        ValueError: for a bad reader name, or a file whose answers do not fit these trials.
    """

    def __init__(self, folder: str | Path, reader: str, trials: Trials):
        if not re.fullmatch(r"[A-Za-z0-9_-]+", reader or ""):
            raise ValueError(f"reader must be a name of letters, digits, - and _, got {reader!r}")
        self.path = Path(folder) / f"turing-{reader}.csv"
        self.reader, self.trials = reader, trials
        self.answers = pd.read_csv(self.path) if self.path.is_file() else pd.DataFrame(columns=COLUMNS)
        known = dict(zip(trials.table["trial"], trials.table["source"]))
        wrong = [int(t) for t, s in zip(self.answers["trial"], self.answers["source"]) if known.get(t) != s]
        if wrong:
            raise ValueError(f"{self.path} holds answers to other trials (e.g. trial {wrong[0]}): another seed or "
                             "other models; use another reader name or folder")

    @property
    def next_trial(self) -> int | None:
        """The first trial without an answer (None when all are answered)."""
        done = set(self.answers["trial"].astype(int))
        return next((t for t in range(len(self.trials)) if t not in done), None)

    def record(self, trial: int, answer: str, confidence: int | None = None, class_guess: str | None = None) -> None:
        """Append one answer to the CSV (written and flushed before returning).

        Raises:
            ValueError: for an answer other than "real"/"synthetic", a confidence outside 1-5 or an unknown trial.
        """
        if answer not in ANSWERS:
            raise ValueError(f"answer must be one of {ANSWERS}, got {answer!r}")
        if confidence is not None and not 1 <= confidence <= 5:
            raise ValueError(f"confidence must be 1-5, got {confidence}")
        if not 0 <= trial < len(self.trials):
            raise ValueError(f"trial must be in 0..{len(self.trials) - 1}, got {trial}")
        source = self.trials.table["source"].iloc[trial]
        row = {"trial": trial, "source": source, "answer": answer, "correct": (answer == REAL) == (source == REAL),
               "confidence": confidence, "class_guess": class_guess, "reader": self.reader,
               "answered_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new_file = not self.path.is_file()
        with self.path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS)
            if new_file:
                writer.writeheader()
            writer.writerow(row)
            handle.flush()
            os.fsync(handle.fileno())
        self.answers = pd.concat([self.answers, pd.DataFrame([row])], ignore_index=True)


@dataclass
class TuringSummary:
    """The readers' results."""

    n: int  # answers scored
    accuracy: float  # share judged correctly (0.5: readers cannot tell)
    accuracy_ci: tuple[float, float]  # exact (Clopper-Pearson) binomial 95% CI
    sensitivity: float | None  # synthetic images called synthetic
    specificity: float | None  # real images called real
    per_model: pd.DataFrame  # source, n, taken_for_real (share answered "real"), with exact 95% CIs
    most_real: pd.DataFrame  # generated trials most often answered "real"

    def text(self) -> str:
        """One line."""
        low, high = self.accuracy_ci
        return (f"accuracy {self.accuracy:.2f} (95% CI {low:.2f}-{high:.2f}, n={self.n}); sensitivity "
                f"{_share(self.sensitivity)}, specificity {_share(self.specificity)}")


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _exact_ci(successes: int, n: int) -> tuple[float, float]:
    interval = binomtest(successes, n).proportion_ci(confidence_level=0.95, method="exact")
    return float(interval.low), float(interval.high)


def summarize(answers: pd.DataFrame, top: int = 8) -> TuringSummary:
    """Score answers of one or more readers (concatenate their :attr:`AnswerLog.answers`).

    Args:
        answers: rows with ``trial``, ``source``, ``answer`` (and ``correct``).
        top: generated images listed in ``most_real``.
    Returns:
        The :class:`TuringSummary`.
    Raises:
        ValueError: when there are no answers.
    """
    if answers.empty:
        raise ValueError("no answers yet: a summary needs at least one")
    is_real = answers["source"] == REAL
    said_real = answers["answer"] == REAL
    correct = int((said_real == is_real).sum())
    synthetic, real = answers[~is_real], answers[is_real]
    per_model = []
    for source, group in answers.groupby("source", sort=True):
        k = int((group["answer"] == REAL).sum())
        low, high = _exact_ci(k, len(group))
        per_model.append({"source": source, "n": len(group), "taken_for_real": k / len(group),
                          "taken_for_real_low": low, "taken_for_real_high": high})
    fooled = (synthetic.assign(real_votes=synthetic["answer"] == REAL).groupby(["trial", "source"], as_index=False)
              .agg(real_votes=("real_votes", "sum"), readers=("real_votes", "size")))
    most_real = fooled[fooled["real_votes"] > 0].sort_values(["real_votes", "trial"], ascending=[False, True]).head(top)
    return TuringSummary(
        n=len(answers), accuracy=correct / len(answers), accuracy_ci=_exact_ci(correct, len(answers)),
        sensitivity=float((synthetic["answer"] != REAL).mean()) if len(synthetic) else None,
        specificity=float((real["answer"] == REAL).mean()) if len(real) else None,
        per_model=pd.DataFrame(per_model), most_real=most_real.reset_index(drop=True))
