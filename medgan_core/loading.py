"""One call to load a trained generator from wherever it lives, knowing what it is.

:func:`load_generator` reads a run folder (its newest checkpoint), a ``step-*.safetensors`` checkpoint, a folder
written by :func:`medgan_core.hub.save_pretrained` or a Hub id, and returns the generator itself (an ``nn.Module``,
ready for :func:`medgan_core.sampling.sample`) with a :class:`GeneratorInfo` attached as ``generator.info``: the
model name, class names in label order, output shape, training data identity, step and the file's metadata.
Sampling, export, plots and explorers take their class names from it when none are passed.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .checkpoint import CheckpointError, generator_from_checkpoint
from .data import describe_dataset
from .sampling import num_classes_of

_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


@dataclass(frozen=True)
class GeneratorInfo:
    """What a loaded generator is and where it came from (``generator.info``)."""

    model: str  # registered model name
    class_names: tuple[str, ...]  # the labels' names in label order; empty for an unconditional generator
    output_shape: tuple[int, int, int]  # (C, H, W) it generates (a growing model's trained stage)
    source: str  # the checkpoint file, pretrained folder or Hub id read
    kind: str  # "checkpoint" or "pretrained"
    format_version: int  # of the checkpoint or config.json
    weights: str  # "G_ema" or "G" (checkpoints); "pretrained" for save_pretrained folders
    training_classes: tuple[str, ...] = ()  # classes of the training data (pooled when unconditional)
    dataset: dict = field(default_factory=dict)  # training data identity (see medgan_core.data.dataset_identity)
    training_data: str | None = None  # the dataset spec or folder name it was trained on
    step: int | None = None  # generator updates trained
    images_seen: int | None = None  # real images shown to D
    metrics: dict = field(default_factory=dict)  # metrics recorded for these weights (pretrained folders; a run
                                                 # folder's metrics.json when it scored this very generator)
    meta: dict = field(default_factory=dict, repr=False)  # the checkpoint's JSON metadata or the config.json

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary (without ``meta``)."""
        summary = asdict(self)
        summary.pop("meta")
        return {key: list(value) if isinstance(value, tuple) else value for key, value in summary.items()}

    def summary(self) -> str:
        """A few lines for people: what ``medgan info`` prints."""
        channels, height, width = self.output_shape
        classes = (", ".join(f"{index} = {name}" for index, name in enumerate(self.class_names))
                   if self.class_names else "unconditional")
        config = self.meta.get("model_config", {})
        mask = int(bool(config.get("with_mask")))
        lines = [
            f"model:         {self.model} ({self.kind}, format {self.format_version}, weights {self.weights})",
            f"source:        {self.source}",
            f"generates:     {channels - mask}x{height}x{width} ({'grayscale' if channels - mask == 1 else 'RGB'})"
            + (" + a segmentation mask" if mask else ""),
            f"classes:       {classes}",
            f"trained on:    {self.training_data or 'not recorded'}; {describe_dataset(self.dataset)}",
            f"step:          {self.step if self.step is not None else 'not recorded'}"
            + (f" ({self.images_seen:,} images seen)" if self.images_seen is not None else ""),
            "metrics:       " + (", ".join(f"{key} {value:.3g}" for key, value in self.metrics.items())
                                     if self.metrics else "none recorded"),
            f"model config:  {config}",
        ]
        train = self.meta.get("train_config")
        if train:
            lines.append(f"train config:  {train}")
        return "\n".join(lines)


def load_generator(source: str | Path, *, device: str | torch.device = "cpu", use_ema: bool = True,
                   revision: str | None = None, expected_model: str | None = None) -> nn.Module:
    """Load a trained generator from a run folder, a checkpoint file, a ``save_pretrained`` folder or a Hub id.

    Args:
        source: a run folder (its newest ``checkpoints/step-*.safetensors``), a checkpoint file, a folder holding
            ``config.json`` + ``model.safetensors``, or a Hub id ``owner/name`` (from the local cache when offline).
        device: where to put the generator.
        use_ema: the EMA weights of a checkpoint when it has them (usually the better samples).
        revision: Hub branch, tag or commit (Hub ids only).
        expected_model: refuse a generator of another registered model.
    Returns:
        The generator in eval mode, with ``generator.info`` (:class:`GeneratorInfo`).
    Raises:
        CheckpointError: for a folder with no checkpoint, a file that is not a GAN checkpoint, or an unknown model.
        medgan_core.hub.PretrainedError: for a broken pretrained folder.
        medgan_core.hub.HubUnreachableError: for a Hub id that is offline and not cached.
    """
    path = Path(source).expanduser()
    if path.is_dir() and (path / "config.json").is_file() or not path.exists() and _HUB_ID.match(str(source)):
        return _load_pretrained(str(source), device, revision, expected_model)
    if not path.exists():
        raise CheckpointError(f"{source} does not exist: pass a run folder, a step-*.safetensors checkpoint, a "
                              "save_pretrained folder or a Hub id 'owner/name'")
    if revision is not None:
        raise ValueError(f"revision={revision!r} applies to Hub ids, but {source} is a local path")
    generator, checkpoint = generator_from_checkpoint(path, use_ema=use_ema, device=device,
                                                      expected_model=expected_model)
    info = checkpoint_info(checkpoint.meta, generator, source=checkpoint.path,
                           format_version=checkpoint.format_version, weights=checkpoint.generator_prefix(use_ema))
    generator.info = replace(info, metrics=_run_metrics(Path(checkpoint.path).parent.parent, generator))
    _check_class_count(generator)
    return generator


def _run_metrics(run_dir: Path, generator: nn.Module) -> dict:
    """The numeric metrics of ``run_dir/metrics.json`` (the notebooks' Evaluate section) when they scored exactly
    this generator's weights; {} otherwise (no file, or an evaluation of an earlier checkpoint)."""
    from .checkpoint import state_dict_sha256
    from .evaluate import METRICS_NAME, headline_metrics

    path = run_dir / METRICS_NAME
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if (saved.get("key") or {}).get("generator_sha256") != state_dict_sha256(generator):
        return {}
    return headline_metrics(saved.get("metrics") or {})


def checkpoint_info(meta: dict[str, Any], generator: nn.Module, *, source: str | Path, format_version: int,
                    weights: str) -> GeneratorInfo:
    """The :class:`GeneratorInfo` of a generator rebuilt from (or just saved as) a training checkpoint.

    Args:
        meta: the checkpoint's JSON metadata.
        generator: the generator built from it.
        source: the checkpoint file.
        format_version: the file's format version.
        weights: ``"G_ema"`` or ``"G"``.
    Returns:
        The info (``fit`` attaches it to ``FitResult.generator``; :func:`load_generator` to what it loads).
    """
    data = meta.get("data") or {}
    names = tuple(data.get("class_names") or ())
    return GeneratorInfo(
        model=meta["model"], class_names=names if num_classes_of(generator) else (),
        output_shape=tuple(generator.output_shape), source=str(source), kind="checkpoint",
        format_version=format_version, weights=weights, training_classes=names, dataset=data.get("dataset") or {},
        training_data=dataset_name(meta), step=meta.get("step"), images_seen=meta.get("images_seen"), meta=meta)


def _load_pretrained(source: str, device: str | torch.device, revision: str | None,
                     expected_model: str | None) -> nn.Module:
    from .hub import FORMAT_VERSION, from_pretrained, load_config  # the Hub client is imported only when needed

    config = load_config(source, revision=revision)
    generator = from_pretrained(source, revision=revision, device=device, expected_model=expected_model)
    generator.info = GeneratorInfo(
        model=config["model"], class_names=tuple(config.get("class_names") or ()),
        output_shape=tuple(generator.output_shape), source=source, kind="pretrained",
        format_version=int(config.get("medgan_format", FORMAT_VERSION)), weights="pretrained",
        training_classes=tuple(config.get("training_classes") or ()), dataset=config.get("dataset") or {},
        training_data=config.get("training_data"), step=(config.get("extra") or {}).get("step"),
        metrics=dict(config.get("metrics") or {}), meta=config)
    _check_class_count(generator)
    return generator


def _check_class_count(generator: nn.Module) -> None:
    """A conditional generator's stored names must name each of its classes (else explorers would mislabel)."""
    names, num_classes = generator.info.class_names, num_classes_of(generator)
    if num_classes and names and len(names) != num_classes:
        raise CheckpointError(f"{generator.info.source} stores {len(names)} class names {list(names)} for a "
                              f"generator with {num_classes} classes; the file is inconsistent")


def dataset_name(meta: dict[str, Any]) -> str | None:
    """The training set's public name in a checkpoint's metadata: the dataset spec (``"demo"``, ``"kaggle:..."``) or
    a folder's name only (the dataset folder's, not its ``Training`` split's), so cards never show local paths."""
    spec = (meta.get("data_config") or {}).get("dataset")
    if spec and (spec == "demo" or spec.startswith("kaggle:")):
        return spec
    data = meta.get("data") or {}
    folder = (data.get("dataset") or {}).get("name") or spec or data.get("source")
    return Path(folder).name if folder else None
