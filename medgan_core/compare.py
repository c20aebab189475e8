"""Compare trained generators on one real test split: the same seeds, the same metrics, one leaderboard.

Each model is loaded from a run folder, a checkpoint file, a ``save_pretrained`` folder or a Hub id; it generates
the same number of images from fixed seeds; every feature extractor scores them against the same real test split
(FD, KD, precision/recall, density/coverage, relative FD, all naming their extractor and sample sizes); conditional
models also get class consistency and per-class FD/KD; every model gets a memorization audit and its generation
speed. A ``real train images`` row scores real training images the same way: the best a generator can hope for.
"""
from __future__ import annotations

import dataclasses
import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd
import torch
import torch.nn as nn

from .checkpoint import CheckpointError, find_latest_checkpoint, load_checkpoint_meta, state_dict_sha256
from .data import ImageSet, describe_dataset, same_dataset
from .evaluator import ClassificationReport, Evaluator, EvaluatorConfig, EvaluatorTrainConfig, trained_image_size
from .fileio import atomic_write_text
from .loading import load_generator
from .metrics.distribution import Score, distribution_panel, per_class_panel
from .metrics.extractors import FeatureExtractor, cached_features, extract_features, extractor_identity
from .metrics.memorization import MemorizationReport, memorization_audit
from .metrics.utility import augmentation_gain, class_consistency, classification_accuracy_score
from .sampling import image_shape, num_classes_of, sample, synthetic_set

REAL_BASELINE = "real train images"
METRICS_NAME = "metrics.json"  # a run's own evaluation (medgan_core.evaluate), reused when its settings match


@dataclass
class ModelEntry:
    """A trained generator and what is known about it."""

    name: str  # display name: the run folder's name or the Hub id
    model: str  # registered model name
    generator: nn.Module
    class_names: list[str]  # the generator's classes (empty when unconditional)
    source: str
    step: int | None = None  # generator steps trained (run folders only)
    history: pd.DataFrame | None = None  # history.csv of a run folder
    dataset: dict = field(default_factory=dict)  # identity of its training data ({}: not recorded)
    run_dir: Path | None = None  # its run folder (where an Evaluate section may have left metrics.json)


def load_entry(source: str | Path, name: str | None = None, device: str | torch.device = "cpu") -> ModelEntry:
    """Load one generator for comparison.

    Args:
        source: a run folder (its newest checkpoint), a ``step-*.safetensors`` file, a folder written by
            ``save_pretrained``, or a Hub id ``owner/name`` (served from the local cache when offline).
        name: display name (default: the folder name or Hub id).
        device: where to put the generator.
    Returns:
        The :class:`ModelEntry` (EMA weights when the checkpoint has them).
    """
    generator = load_generator(source, device=device)
    info = generator.info
    if info.kind != "checkpoint":
        return ModelEntry(name or str(source), info.model, generator, list(info.class_names), info.source,
                          dataset=info.dataset)
    run_dir = Path(info.source).parent.parent
    history_path = run_dir / "history.csv"
    return ModelEntry(name or run_dir.name, info.model, generator, list(info.class_names), info.source, info.step,
                      pd.read_csv(history_path) if history_path.is_file() else None, info.dataset, run_dir)


def discover_runs(root: str | Path) -> list[Path]:
    """Run folders (holding ``checkpoints/step-*.safetensors``) at or up to two levels below ``root``, sorted."""
    root = Path(root)
    candidates = [root, *root.glob("*"), *root.glob("*/*")]
    return sorted(p for p in candidates if p.is_dir() and find_latest_checkpoint(p / "checkpoints") is not None)


def entries_for_dataset(entries: Sequence[ModelEntry], dataset: dict, *,
                        explicit: bool) -> tuple[list[ModelEntry], list[str]]:
    """Keep the models trained on ``dataset``: a model of other data would be scored in the wrong feature space.

    Args:
        entries: loaded models.
        dataset: identity of the compared dataset (:func:`~medgan_core.data.identify_dataset`).
        explicit: the caller named these models (``runs=[...]``) rather than having them discovered. Then a model
            whose training data is not recorded (files from before it was) is kept with a note; discovered ones are
            left out.
    Returns:
        ``(kept entries, notes naming each model left out or unchecked and why)``.
    Raises:
        ValueError: when a model named explicitly was trained on other data (the message names both datasets).
    """
    kept, notes = [], []
    for entry in entries:
        match = same_dataset(entry.dataset, dataset)
        if match:
            kept.append(entry)
        elif match is False and explicit:
            raise ValueError(f"{entry.name} was trained on {describe_dataset(entry.dataset)}, but this comparison is "
                             f"on {describe_dataset(dataset)}; compare it on its own dataset, or leave it out")
        elif match is False:
            notes.append(f"left out {entry.name}: trained on {describe_dataset(entry.dataset)}, not on "
                         f"{describe_dataset(dataset)}")
        elif explicit:
            kept.append(entry)
            notes.append(f"{entry.name} records no training-data identity (saved before medgan_core recorded it); "
                         f"compared because it was named explicitly: make sure it was trained on {dataset['name']}")
        else:
            notes.append(f"left out {entry.name}: it records no training-data identity (saved before medgan_core "
                         "recorded it); name it in runs=[...] to compare it anyway")
    return kept, notes


def unique_names(entries: Sequence[ModelEntry]) -> tuple[list[ModelEntry], list[str]]:
    """Give models that share a display name (e.g. two runs' ``05_stylegan2`` folders) the name of the folder above
    as well, so no row of the leaderboard silently replaces another.

    Returns:
        ``(entries, notes naming each renamed model)``.
    Raises:
        ValueError: when the names are still not unique (pass distinct sources or names).
    """
    counts = pd.Series([entry.name for entry in entries]).value_counts()
    renamed, notes = [], []
    for entry in entries:
        if counts[entry.name] > 1:
            parent = (entry.run_dir or Path(entry.source)).parent.name
            new_name = f"{parent}/{entry.name}"
            notes.append(f"{entry.source}: named {new_name!r} ({entry.name!r} is the name of several models)")
            entry = dataclasses.replace(entry, name=new_name)
        renamed.append(entry)
    names = [entry.name for entry in renamed]
    if len(set(names)) < len(names):
        raise ValueError(f"several models would share a leaderboard row: {sorted(names)}; give them distinct names")
    return renamed, notes


def comparable_entries(entries: Sequence[ModelEntry], image_size: int | None = None,
                       channels: int | None = None) -> tuple[list[ModelEntry], list[str]]:
    """Keep the models that generate one image size and channel count, saying which were left out.

    Args:
        entries: loaded models.
        image_size: the size to keep; default the most common one among ``entries`` (ties: the first seen).
        channels: the channel count to keep; default as for the size.
    Returns:
        ``(kept entries, notes naming each model left out and why)``.
    """
    shapes = [(image_shape(e.generator)[-1], image_shape(e.generator)[0]) for e in entries]
    if not shapes:
        return [], []
    common_size = image_size or max(dict.fromkeys(s for s, _ in shapes), key=[s for s, _ in shapes].count)
    common_channels = channels or max(dict.fromkeys(c for _, c in shapes), key=[c for _, c in shapes].count)
    kept, notes = [], []
    for entry, (size, chans) in zip(entries, shapes):
        if (size, chans) == (common_size, common_channels):
            kept.append(entry)
        else:
            notes.append(f"left out {entry.name}: it generates {chans}x{size} px, this comparison is at "
                         f"{common_channels}x{common_size} px")
    return kept, notes


def find_evaluator(root: str | Path, dataset: dict, image_size: int | None = None) -> Path | None:
    """The best ``evaluator.safetensors`` under ``root`` that was trained or tested on ``dataset`` (at
    ``image_size``): the newest with a test report (notebook 00), else the newest (e.g. a small one a model notebook
    trained for its own evaluation).

    Evaluators of other data (e.g. one trained on the demo set, which shares the tumour set's class names) or of
    another image size, and files that record no dataset, are skipped, with one warning naming them.

    Args:
        root: folder searched recursively (e.g. ``runs/``, holding ``<timestamp>/00_vit_evaluator/``).
        dataset: identity of the compared dataset (:func:`~medgan_core.data.identify_dataset`).
        image_size: side of the images to score; None: any.
    Returns:
        The file, or None when no evaluator of this dataset is there.
    """
    found = sorted(Path(root).glob("**/evaluator.safetensors"), key=lambda p: p.stat().st_mtime, reverse=True)
    skipped, matching = [], []
    for path in found:
        try:
            meta = load_checkpoint_meta(path)
        except CheckpointError as error:
            skipped.append(f"{path} (unreadable: {error})")
            continue
        datasets = meta.get("datasets") or {}
        if any(same_dataset(identity, dataset) for identity in datasets.values()):
            trained_at = trained_image_size(meta)
            if image_size is None or trained_at in (None, image_size):
                matching.append((path, "test_report" in meta))
            else:
                skipped.append(f"{path} (trained on {trained_at} px images, these are {image_size} px)")
            continue
        described = "; ".join(f"{role}: {describe_dataset(identity)}" for role, identity in datasets.items()
                              if identity) or "no dataset recorded"
        skipped.append(f"{path} ({described})")
    if matching:
        return next((path for path, tested in matching if tested), matching[0][0])
    if skipped:
        warnings.warn(f"no evaluator of {describe_dataset(dataset)} under {root}; skipped " + ", ".join(skipped),
                      stacklevel=2)
    return None


def check_evaluator(evaluator: Evaluator, dataset: dict, image_size: int | None = None) -> str | None:
    """Refuse an evaluator trained and tested on other data than the compared dataset, or on another image size.

    Args:
        evaluator: the evaluator to score with.
        dataset: identity of the compared dataset.
        image_size: side of the images it will score; None: not checked.
    Returns:
        None when it matches; a note when the evaluator records no dataset (older files), to print and keep.
    Raises:
        ValueError: when its training and test data are both other datasets, or it was trained on images of
            another size (the brain-tumour evaluator at 128 px classifies 64 px test images at 0.54, not 0.84).
    """
    trained_at = evaluator.data_image_size
    if image_size is not None and trained_at is not None and trained_at != image_size:
        raise ValueError(f"the evaluator was trained on {trained_at} px images, but these are {image_size} px: its "
                         "classes and features would be judged across a change of resolution (on brain_tumor_mri "
                         "test accuracy fell from 0.84 at 128 px to 0.54 at 64 px). Train one at this size "
                         f"(notebooks/00_vit_evaluator.ipynb with image_size={image_size})")
    serves = evaluator.serves(dataset)
    if serves:
        return None
    if serves is None:
        return ("the evaluator records no dataset identity (saved before medgan_core recorded it): make sure it was "
                f"trained on {dataset['name']}")
    trained_on = "; ".join(f"{role}: {describe_dataset(identity)}" for role, identity in evaluator.datasets.items())
    raise ValueError(f"the evaluator was trained/tested on other data ({trained_on}), not on "
                     f"{describe_dataset(dataset)}; its features would score this dataset in the wrong space. Train "
                     "one on this dataset (notebooks/00_vit_evaluator.ipynb with dataset= or test_dataset= set to it)")


def generation_speed(generator: nn.Module, n: int = 256, batch_size: int = 64) -> float:
    """Images per second of :func:`medgan_core.sampling.sample` on the generator's device (after a warm-up)."""
    sample(generator, min(n, batch_size), seed=0, batch_size=batch_size)
    if next(generator.parameters()).is_cuda:
        torch.cuda.synchronize()
    started = time.perf_counter()
    sample(generator, n, seed=1, batch_size=batch_size)
    if next(generator.parameters()).is_cuda:
        torch.cuda.synchronize()
    return n / (time.perf_counter() - started)


@dataclass
class Comparison:
    """Everything a comparison produced; :meth:`save` writes it to a folder."""

    scores: pd.DataFrame  # long form: model, extractor, class, metric, value, ci_low, ci_high, n_real, n_fake, warning
    leaderboard: pd.DataFrame  # one row per model
    samples: dict[str, torch.Tensor]  # fixed-seed images per model, float in [-1, 1]
    histories: dict[str, pd.DataFrame]
    memorization: dict[str, MemorizationReport]
    class_consistency: dict[str, ClassificationReport]
    synthetic: dict[str, ImageSet]  # every scored image per row (memorization galleries index into these)
    notes: list[str] = field(default_factory=list)

    def save(self, out_dir: str | Path) -> Path:
        """Write ``scores.csv``, ``leaderboard.csv``/``.html``/``.png``, ``samples.png``, ``losses.png``, ``notes.txt``.

        Args:
            out_dir: destination folder (created).
        Returns:
            The folder.
        """
        from .plotting import plot_leaderboard, plot_loss_comparison, plot_model_samples

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "scores.csv", self.scores.to_csv(index=False))
        atomic_write_text(out / "leaderboard.csv", self.leaderboard.to_csv(index=False))
        atomic_write_text(out / "leaderboard.html", format_leaderboard(self.leaderboard).to_html(index=False))
        plot_leaderboard(format_leaderboard(self.leaderboard), save_to=out / "leaderboard.png")
        plot_model_samples(self.samples, save_to=out / "samples.png")
        if self.histories:
            plot_loss_comparison(self.histories, save_to=out / "losses.png")
        atomic_write_text(out / "notes.txt", "\n".join(self.notes) + "\n")
        return out


def evaluation_key(generator: nn.Module, real_train: ImageSet, real_test: ImageSet,
                   extractors: Sequence[FeatureExtractor], *, n_samples: int, seed: int, n_boot: int, k: int,
                   per_class: bool) -> dict[str, Any]:
    """Everything a model's scores depend on: equal keys give equal scores, so saved ones can be reused.

    Args:
        generator: the scored generator (its exact weights count, not its name).
        real_train: the real training split (relative FD's reference, the memorization audit).
        real_test: the real test split.
        extractors: the feature extractors (names and weights hashes; the first one also runs the audit).
        n_samples: generated images.
        seed: latent seed base.
        n_boot: bootstrap resamples.
        k: neighbours for precision/recall/density/coverage.
        per_class: per-class scores included.
    Returns:
        A JSON-ready dict.
    """
    return {"generator_sha256": state_dict_sha256(generator), "train_split": real_train.cache_key,
            "test_split": real_test.cache_key,
            "extractors": [list(extractor_identity(extractor)) for extractor in extractors],
            "n_samples": n_samples, "seed": seed, "n_boot": n_boot, "k": k, "per_class": per_class}


def _saved_evaluation(entry: ModelEntry, key: dict[str, Any]) -> dict[str, Any] | None:
    """The run's ``metrics.json`` when it was computed with exactly ``key`` (else None: compute again)."""
    path = entry.run_dir / METRICS_NAME if entry.run_dir is not None else None
    if path is None or not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return saved if saved.get("key") == key else None


def _score_rows(model: str, scores: Sequence[Score], class_name: str | None = None) -> list[dict]:
    return [{"model": model, "class": class_name, **score.as_dict()} for score in scores]


def compare_models(entries: Sequence[ModelEntry], real_train: ImageSet, real_test: ImageSet,
                   extractors: Sequence[FeatureExtractor], *, evaluator: Evaluator | None = None,
                   n_samples: int = 1000, seed: int = 0, n_boot: int = 100, k: int = 5,
                   memorization_extractor: FeatureExtractor | None = None, per_class: bool = True,
                   real_baseline: bool = True, cache_dir: str | Path | None = None, n_grid: int = 32,
                   progress: Callable[[str], None] | None = print) -> Comparison:
    """Score every model on the same real test split with the same seeds.

    Args:
        entries: models from :func:`load_entry`.
        real_train: the real training split (relative FD's real-vs-real reference, memorization, the baseline).
        real_test: the real test split every model is scored against.
        extractors: feature extractors (e.g. ``get_extractor("evaluator", path=...)``, ``get_extractor("inception")``).
        evaluator: the trained evaluator, for class consistency of conditional models.
        n_samples: generated images per model (split equally over classes for conditional models).
        seed: latent seed base (model-independent, so every model draws the same latents).
        n_boot: bootstrap resamples for the CIs.
        k: neighbours for precision/recall/density/coverage.
        memorization_extractor: feature space of the memorization audit (default: the first extractor).
        per_class: per-class FD/KD for conditional models whose classes are the data's.
        real_baseline: add the ``real train images`` row.
        cache_dir: where real-image features are cached.
        n_grid: images per model kept for the side-by-side grid.
        progress: called with one line per finished step (None: silent).
    Returns:
        The :class:`Comparison`.
    Raises:
        ValueError: when a model's image size or channels differ from the test data's, or nothing is compared.
    """
    if not entries and not real_baseline:
        raise ValueError("nothing to compare: pass at least one model (run folder or Hub id)")
    if not extractors:
        raise ValueError("pass at least one feature extractor (e.g. get_extractor('inception'))")
    say = progress or (lambda line: None)
    for entry in entries:
        channels, size, _ = image_shape(entry.generator)
        if (size, channels) != (real_test.image_size, real_test.channels):
            raise ValueError(f"{entry.name} generates {channels}x{size} px images but the test data "
                             f"is {real_test.channels}x{real_test.image_size} px; load the data with "
                             f"image_size={size}, channels={channels}, or compare models of one size")
    audit_extractor = memorization_extractor or extractors[0]
    real = {ex.name: (cached_features(ex, real_train, cache_dir), cached_features(ex, real_test, cache_dir))
            for ex in extractors}
    say(f"real features: {len(real_train)} train and {len(real_test)} test images with {[e.name for e in extractors]}")
    rows, board, notes = [], [], []
    warned: dict[str, list[str]] = {}  # warning -> "model / extractor" it came from (one note each, not one per model)
    samples, histories, audits, consistency = {}, {}, {}, {}
    entries, notes = unique_names(entries)
    sets = _synthetic_sets(entries, real_train, n_samples, seed, real_baseline)
    for name, (entry, synthetic) in sets.items():
        line = {"model": name, "architecture": entry.model if entry else "real data",
                "step": entry.step if entry else None, "n_generated": len(synthetic)}
        if entry is not None:
            line["img_per_s"] = round(generation_speed(entry.generator), 1)
            if entry.history is not None:
                histories[name] = entry.history
        samples[name] = synthetic.images[_grid_rows(synthetic, n_grid)].float() / 127.5 - 1
        key = entry and evaluation_key(entry.generator, real_train, real_test, extractors, n_samples=n_samples,
                                       seed=seed, n_boot=n_boot, k=k, per_class=per_class)
        saved = entry and memorization_extractor is None and _saved_evaluation(entry, key)
        if saved:  # the run's Evaluate section scored these very images the same way
            line.update({metric: value for metric, value in saved["metrics"].items() if metric not in line})
            rows += [{**row, "model": name} for row in saved["scores"]]
            audits[name] = MemorizationReport(pd.DataFrame(saved["memorization_table"]), **saved["memorization"])
            if saved["class_consistency"]:
                consistency[name] = ClassificationReport.from_dict(saved["class_consistency"])
            notes.append(f"{name}: scores reused from {entry.run_dir / METRICS_NAME} (same generator weights, "
                         "extractors, test split and sample settings)")
            board.append(line)
            say(f"{name}: {len(synthetic)} images, scores read from its metrics.json")
            continue
        fake_features = {}
        for ex in extractors:
            fake_features[ex.name] = extract_features(ex, synthetic.images)
            train_feats, test_feats = real[ex.name]
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                panel = distribution_panel(test_feats, fake_features[ex.name], train_feats, extractor=ex, k=k,
                                           n_boot=n_boot, seed=seed)
            for message in sorted({str(w.message) for w in caught}):
                warned.setdefault(message, []).append(f"{name} / {ex.name}")
            rows += _score_rows(name, panel)
            line.update({f"{s.metric} [{ex.name}]": s.value for s in panel})
            for score in (s for s in panel if s.ci_low is not None):
                line[f"{score.metric} low [{ex.name}]"] = score.ci_low
                line[f"{score.metric} high [{ex.name}]"] = score.ci_high
            if per_class and entry is not None and entry.class_names == list(real_test.class_names):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # per-class sets are small by nature; each Score keeps its note
                    for class_name, class_scores in per_class_panel(
                            test_feats, real_test.labels, fake_features[ex.name], synthetic.labels,
                            real_test.class_names, extractor=ex, n_boot=n_boot, seed=seed).items():
                        rows += _score_rows(name, class_scores, class_name)
        if entry is not None:
            train_feats, test_feats = real[audit_extractor.name]
            audits[name] = memorization_audit(synthetic.images, real_train.images, real_test.images,
                                              fake_features[audit_extractor.name], train_feats, test_feats,
                                              extractor=audit_extractor)
            line["memorized share"] = audits[name].share_flagged
            if evaluator is not None and entry.class_names:
                if entry.class_names == evaluator.class_names:
                    consistency[name] = class_consistency(evaluator, synthetic.images, synthetic.labels,
                                                          entry.class_names, seed=seed)
                    line["class consistency"] = consistency[name].accuracy
                else:
                    notes.append(f"{name}: classes {entry.class_names} are not the evaluator's "
                                 f"{evaluator.class_names}; no class consistency")
        board.append(line)
        say(f"{name}: scored {len(synthetic)} images")
    everywhere = len(sets) * len(extractors)
    notes = [f"{message} [{'every model and extractor' if len(sources) == everywhere else '; '.join(sources)}]"
             for message, sources in warned.items()] + notes
    leaderboard = pd.DataFrame(board)
    sort_key = next((c for c in leaderboard.columns if c.startswith("relative_fd [")), None)
    if sort_key is not None:
        leaderboard = leaderboard.sort_values(sort_key, kind="stable").reset_index(drop=True)
    return Comparison(pd.DataFrame(rows), leaderboard, samples, histories, audits, consistency,
                      {name: synthetic for name, (_, synthetic) in sets.items()}, notes)


def utility_table(comparison: Comparison, entries: Sequence[ModelEntry], real_train: ImageSet, real_test: ImageSet, *,
                  config: EvaluatorConfig | None = None, train_config: EvaluatorTrainConfig | None = None,
                  seeds: Sequence[int] = (0, 1), ratios: Sequence[float] = (0.5, 1.0), n_boot: int = 1000,
                  progress: Callable[[str], None] | None = print) -> pd.DataFrame:
    """CAS and augmentation gain of every conditional model whose classes are the data's (others are skipped).

    Uses the images the comparison already generated, so the scores describe the same samples as the leaderboard.

    Args:
        comparison: from :func:`compare_models`.
        entries: the compared models.
        real_train: real training split.
        real_test: real test split.
        config: classifier architecture for the paired runs.
        train_config: classifier recipe (seeds replaced by ``seeds``).
        seeds: paired runs per setting.
        ratios: synthetic images per real image for augmentation gain.
        n_boot: bootstrap resamples of the test set.
        progress: called with a line per finished classifier run (None: silent).
    Returns:
        One row per (model, setting): accuracy with CI and the difference to real-only training with its CI; the
        ``real`` rows are the shared baseline of each experiment.
    """
    frames = []
    for entry in entries:
        if entry.class_names != list(real_train.class_names):
            continue
        synthetic = comparison.synthetic[entry.name]
        say = (lambda line, name=entry.name: progress(f"{name}: {line}")) if progress else None
        largest_class, generated = max(real_train.class_counts().values()), min(synthetic.class_counts().values())
        ratios_here = [ratio for ratio in ratios if ratio * largest_class <= generated]
        if len(ratios_here) < len(ratios):
            note = (f"augmentation at ratio(s) {[r for r in ratios if r not in ratios_here]} skipped: it needs "
                    f"ratio x {largest_class} generated images per class and there are {generated}; raise n_samples")
            comparison.notes.append(f"{entry.name}: {note}")
            if say:
                say(note)
        cas = classification_accuracy_score(synthetic, real_train, real_test, config=config, train_config=train_config,
                                            seeds=seeds, n_boot=n_boot, progress=say)
        frames.append(cas.summary.assign(model=entry.name, experiment="CAS"))
        if ratios_here:
            gain = augmentation_gain(synthetic, real_train, real_test, ratios=ratios_here, config=config,
                                     train_config=train_config, seeds=seeds, n_boot=n_boot, progress=say)
            frames.append(gain.summary.assign(model=entry.name, experiment="augmentation"))
    if not frames:
        return pd.DataFrame(columns=["model", "experiment", "setting", "accuracy"])
    table = pd.concat(frames, ignore_index=True)
    return table[["model", "experiment", *[c for c in table.columns if c not in ("model", "experiment")]]]


def _synthetic_sets(entries: Sequence[ModelEntry], real_train: ImageSet, n_samples: int, seed: int,
                    real_baseline: bool) -> dict[str, tuple[ModelEntry | None, ImageSet]]:
    """Images to score per row: ``n_samples`` generated per model, and as many real training images."""
    sets: dict[str, tuple[ModelEntry | None, ImageSet]] = {}
    for entry in entries:
        classes = max(1, len(entry.class_names))
        per_class = max(1, n_samples // classes)
        sets[entry.name] = (entry, synthetic_set(entry.generator, per_class, class_names=entry.class_names or None,
                                                 seed=seed, source=entry.source))
    if real_baseline:
        picks = torch.randperm(len(real_train), generator=torch.Generator().manual_seed(seed))[:n_samples]
        sets[REAL_BASELINE] = (None, real_train.subset(picks.sort().values, split="baseline"))
    return sets


def _grid_rows(data: ImageSet, n: int) -> torch.Tensor:
    """Up to ``n`` rows spread over the classes, in label order (the same picks for every model)."""
    per_class = max(1, n // len(data.class_names))
    picks = [torch.nonzero(data.labels == label).flatten()[:per_class] for label in range(len(data.class_names))]
    return torch.cat(picks)[:n]


def format_leaderboard(leaderboard: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """A display copy: values rounded, each 95% CI folded into its value as ``value [low, high]``.

    Args:
        leaderboard: :attr:`Comparison.leaderboard`.
        digits: significant digits.
    Returns:
        A string-valued frame for HTML, PNG and notebooks.
    """
    shown = pd.DataFrame({"model": leaderboard["model"]})
    for column in leaderboard.columns:
        if column == "model" or " low [" in column or " high [" in column:
            continue
        low, high = column.replace(" [", " low [", 1), column.replace(" [", " high [", 1)
        values = []
        for index, value in leaderboard[column].items():
            has_ci = " [" in column and low in leaderboard.columns  # only metric columns carry a CI
            ci = (leaderboard[low][index], leaderboard[high][index]) if has_ci else None
            values.append(_format_value(value, ci, digits))
        shown[column] = values
    return shown


def _format_value(value, ci: tuple[float, float] | None, digits: int) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return ""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    text = _format_number(value, digits)
    if ci is not None and not pd.isna(ci[0]):
        text += f" [{_format_number(ci[0], digits)}, {_format_number(ci[1], digits)}]"
    return text


def _format_number(value: float, digits: int) -> str:
    """``digits`` significant digits; large numbers (steps, img/s, FDs >= 10**digits) as ``1,328`` not ``1.33e+03``."""
    return f"{value:,.0f}" if abs(value) >= 10 ** digits else f"{value:.{digits}g}"
