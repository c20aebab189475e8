"""Share trained generators on the Hugging Face Hub (the only module that imports ``huggingface_hub``).

A pretrained folder (local or a Hub model repo) holds four files::

    config.json         {"medgan_format": 1, "model": "cdcgan", "model_config": {...}, "class_names": [...], ...}
    model.safetensors   the generator's state_dict, nothing else (no discriminator, no optimizer)
    samples.png         a fixed-seed sample grid shown in the model card
    README.md           the model card: front matter, data, metrics, usage, not-for-clinical-use notice

Loading rebuilds the generator through the model registry from ``config.json`` and loads the weights with
``strict=True`` from safetensors: nothing is unpickled, so a downloaded repo cannot run code.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn as nn
from huggingface_hub import HfApi, is_offline_mode, snapshot_download
from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as save_safetensors_bytes

from . import __version__
from .checkpoint import generator_from_checkpoint
from .config import to_dict
from .fileio import atomic_write_bytes, atomic_write_json, atomic_write_text
from .loading import dataset_name
from .registry import build_model, get_model_spec, list_models, stored_config
from .sampling import class_names_for, fixed_labels, num_classes_of, sample, save_grid

FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
SAMPLES_NAME = "samples.png"
CARD_NAME = "README.md"
SAMPLE_SEED = 0  # the card's grid is reproducible: sample(G, n, seed=SAMPLE_SEED)
GRID_COLUMNS = 8
TAGS = ("gan", "medical-imaging", "mri", "synthetic-data")
DISCLAIMER = (
    "**Not for clinical use.** This model generates *synthetic* brain MRI images for research and education "
    "only. The images do not show real patients, may contain anatomically implausible artefacts, and must not "
    "be used for diagnosis, treatment decisions or as a substitute for real clinical data. A GAN trained on a "
    "small public dataset can reproduce training images closely: check generated data for memorisation "
    "before sharing it."
)


class PretrainedError(ValueError):
    """A folder or Hub repo that does not hold a loadable MedGAN generator."""


class HubUnreachableError(ConnectionError):
    """The Hub cannot be reached (offline mode or no network) and nothing usable is cached."""


def save_pretrained(generator: nn.Module, folder: str | Path, *, model_name: str | None = None,
                    class_names: Sequence[str] | None = None, training_data: str | None = None,
                    dataset: dict | None = None, metrics: dict[str, float] | None = None,
                    metrics_measured_on: str | None = None, evaluation: Any = None, sample_grid: bool = True,
                    extra: dict[str, Any] | None = None, repo_id: str | None = None, license: str = "mit") -> Path:
    """Write a generator as a pretrained folder (config.json, model.safetensors, samples.png, README.md), then load it
    back with ``strict=True`` and check that it draws the same images.

    A generator from ``fit`` or :func:`medgan_core.load_generator` knows its model, classes, training data and step
    (``generator.info``): every argument left at None is taken from there.

    Args:
        generator: a medgan generator (with ``.config``), e.g. ``FitResult.generator``.
        folder: destination folder (created; these four files are overwritten).
        model_name: the registry name the generator was built with (``"dcgan"``).
        class_names: the training data's class names in label order. For a conditional generator they name its
            labels (one per class); for an unconditional one they only describe the pooled training data.
        training_data: name of the training set, shown in the card (``"kaggle:brain-tumor-mri"``).
        dataset: the training data's identity (``ImageSet.dataset``), so comparisons can check what it was trained on.
        metrics: metric name -> value actually computed for this generator (``{"fid": 41.3}``); the card
            says "no metrics computed yet" when empty.
        metrics_measured_on: what the metrics were measured on, shown under them.
        evaluation: a :class:`medgan_core.evaluate.RunEvaluation`: its metrics and what they were measured on.
        sample_grid: render ``samples.png`` (seed :data:`SAMPLE_SEED`, one row per class when conditional).
        extra: more JSON-serialisable facts kept in ``config.json`` (default: the training step and checkpoint).
        repo_id: Hub id used in the card's usage snippet; a placeholder when ``None``.
        license: license identifier for the card's front matter.
    Returns:
        The folder.
    Raises:
        ValueError: when ``model_name`` is missing or not the generator's model, or a conditional generator gets a
            wrong number of class names.
        PretrainedError: when the written folder does not load back to the same generator.
    """
    info = getattr(generator, "info", None)
    if info is not None:
        model_name = model_name or info.model
        class_names = class_names if class_names is not None else (info.class_names or info.training_classes)
        training_data = training_data or info.training_data
        dataset = dataset if dataset is not None else info.dataset
        extra = extra if extra is not None else {"step": info.step, "source": Path(info.source).name}
    if evaluation is not None:
        metrics = metrics if metrics is not None else evaluation.card_metrics()
        metrics_measured_on = metrics_measured_on or evaluation.measured_on()
    if model_name is None:
        raise ValueError("pass model_name= (the registry name the generator was built with); only generators from "
                         "fit or load_generator know it")
    spec = get_model_spec(model_name)
    if not isinstance(generator.config, spec.config_cls):
        raise ValueError(f"the generator's config is a {type(generator.config).__name__}, but model "
                         f"{model_name!r} uses {spec.config_cls.__name__}: pass the name it was built with")
    num_classes = num_classes_of(generator)
    names = [str(name) for name in class_names or []]
    if num_classes and names:
        class_names_for(generator, names)  # the same count check as sampling and plotting
    metrics = {str(name): float(value) for name, value in (metrics or {}).items()}
    folder = Path(folder)
    config = {
        "medgan_format": FORMAT_VERSION, "model": model_name, "model_config": to_dict(generator.config),
        "output_shape": list(generator.output_shape),  # (C, H, W): a growing model's trained stage, not the target
        "z_dim": int(generator.config.z_dim),  # latent size (a derived property for some models, so stated here)
        "class_names": names if num_classes else [],  # label names: what explorers and sample(labels=...) use
        "training_classes": names, "training_data": training_data, "dataset": dataset or {}, "metrics": metrics,
        "metrics_measured_on": metrics_measured_on,
        "extra": extra or {}, "medgan_core_version": __version__,
    }
    atomic_write_json(folder / CONFIG_NAME, config)
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in generator.state_dict().items()}
    atomic_write_bytes(folder / WEIGHTS_NAME, save_safetensors_bytes(state, metadata={"format": "pt"}))
    if sample_grid:
        n = num_classes * GRID_COLUMNS if num_classes else 4 * GRID_COLUMNS
        labels = fixed_labels(n, num_classes) if num_classes else None  # GRID_COLUMNS images per class row
        save_grid(sample(generator, n, labels, seed=SAMPLE_SEED), folder / SAMPLES_NAME, nrow=GRID_COLUMNS)
    else:
        (folder / SAMPLES_NAME).unlink(missing_ok=True)  # a stale grid would contradict the new card
    atomic_write_text(folder / CARD_NAME, _model_card(config, spec.description, sample_grid, repo_id, license))
    _check_round_trip(generator, folder)
    return folder


def _check_round_trip(generator: nn.Module, folder: Path) -> None:
    """The written folder must rebuild the same generator (weights loaded with strict=True, same images)."""
    reloaded = from_pretrained(folder, device=next(generator.parameters()).device)
    labels = fixed_labels(4, num_classes_of(generator)) if num_classes_of(generator) else None
    if not torch.allclose(sample(reloaded, 4, labels, seed=SAMPLE_SEED), sample(generator, 4, labels, seed=SAMPLE_SEED),
                          atol=1e-5):
        raise PretrainedError(f"{folder} does not load back to the generator that was saved (its images differ); "
                              "nothing else was changed, please report this")


def load_config(repo_id_or_path: str | Path, *, revision: str | None = None) -> dict[str, Any]:
    """Read a pretrained folder's ``config.json`` (e.g. for its ``class_names``) without loading weights.

    Args:
        repo_id_or_path: a local folder written by :func:`save_pretrained`, or a Hub id ``"owner/name"``.
        revision: Hub branch, tag or commit (Hub ids only).
    Returns:
        The parsed config (``model``, ``model_config``, ``class_names``, ``training_data``, ``metrics``, ...).
    Raises:
        PretrainedError: for a folder without a MedGAN ``config.json``.
        HubUnreachableError: for a Hub id that is neither reachable nor cached.
    """
    return _read_config(_resolve_folder(repo_id_or_path, revision, [CONFIG_NAME]))


def from_pretrained(repo_id_or_path: str | Path, *, revision: str | None = None,
                    device: str | torch.device = "cpu", expected_model: str | None = None) -> nn.Module:
    """Rebuild a generator saved by :func:`save_pretrained` / :func:`push_to_hub`.

    With ``HF_HUB_OFFLINE=1`` a Hub id is served from the local Hugging Face cache.

    Args:
        repo_id_or_path: a local folder, or a Hub id ``"owner/name"``.
        revision: Hub branch, tag or commit (Hub ids only).
        device: where to put the generator.
        expected_model: if given, refuse weights of another registered model.
    Returns:
        The generator in eval mode; call ``G(z, labels)`` or use :func:`medgan_core.sampling.sample`.
    Raises:
        PretrainedError: missing files, an unknown or unexpected model, or weights that do not fit it.
        HubUnreachableError: for a Hub id that is neither reachable nor cached.
        ValueError: for a ``revision`` with a local folder.
    """
    folder = _resolve_folder(repo_id_or_path, revision, [CONFIG_NAME, WEIGHTS_NAME])
    config = _read_config(folder)
    model_name = config["model"]
    if expected_model is not None and model_name != expected_model:
        raise PretrainedError(f"{repo_id_or_path} holds a {model_name!r} generator, not {expected_model!r}; "
                              f"load it with expected_model={model_name!r} or pick another repo")
    if model_name not in list_models():
        raise PretrainedError(f"{repo_id_or_path} holds model {model_name!r}, which this medgan_core "
                              f"{__version__} does not know; registered models: {sorted(list_models())}")
    try:
        generator, _, _ = build_model(model_name, stored_config(model_name, config["model_config"]))
    except ValueError as error:
        raise PretrainedError(f"{repo_id_or_path}: config.json does not describe a valid {model_name!r}: "
                              f"{error}") from None
    weights_path = folder / WEIGHTS_NAME
    if not weights_path.is_file():
        raise PretrainedError(f"{folder} has no {WEIGHTS_NAME}; a pretrained folder needs {CONFIG_NAME} "
                              f"and {WEIGHTS_NAME} (write one with save_pretrained)")
    try:
        state = load_file(weights_path)
    except SafetensorError as error:
        raise PretrainedError(f"{weights_path} is not a readable safetensors file ({error})") from None
    try:
        generator.load_state_dict(state, strict=True)
    except RuntimeError as error:  # missing/unexpected keys or wrong shapes, all listed by torch
        raise PretrainedError(f"{weights_path}: the weights do not fit a {model_name!r} generator built from "
                              f"config.json: {error}") from None
    return generator.to(device, memory_format=torch.channels_last).eval()  # ~1.4x faster sampling on CPU


def push_to_hub(generator: nn.Module, repo_id: str, *, model_name: str | None = None, token: str | None = None,
                private: bool = False, commit_message: str = "Upload MedGAN generator", **card_fields: Any) -> str:
    """Upload a generator as a Hub model repo (created if needed) with its model card and sample grid.

    Args:
        generator: a medgan generator.
        repo_id, token, private, commit_message: as for :func:`push_folder_to_hub`.
        model_name: the registry name the generator was built with (default: ``generator.info.model``).
        **card_fields: passed to :func:`save_pretrained` (``evaluation``, ``class_names``, ``metrics``, ...).
    Returns:
        The repo URL.
    Raises:
        HubUnreachableError: when ``HF_HUB_OFFLINE=1``.
    """
    _check_online()
    with tempfile.TemporaryDirectory(prefix="medgan-hub-") as tmp:
        # write (and so validate) everything locally before touching the network
        save_pretrained(generator, tmp, model_name=model_name, repo_id=repo_id, **card_fields)  # checks a load
        return _upload(tmp, repo_id, token, private, commit_message)


def push_folder_to_hub(folder: str | Path, repo_id: str, *, token: str | None = None, private: bool = False,
                       commit_message: str = "Upload MedGAN generator") -> str:
    """Upload a folder written by :func:`save_pretrained` (checked by loading it back first) as a Hub model repo.

    Args:
        folder: the ``save_pretrained`` folder.
        repo_id: ``"owner/name"`` (or ``"name"`` for your own account).
        token: Hub token; ``None`` uses the one stored by ``hf auth login``.
        private: create the repo as private (an existing repo keeps its visibility).
        commit_message: message of the upload commit.
    Returns:
        The repo URL.
    Raises:
        HubUnreachableError: when ``HF_HUB_OFFLINE=1``.
        PretrainedError: when the folder is not a loadable generator.
    """
    _check_online()
    from_pretrained(folder)  # strict load: a broken folder fails here, not for the people who download it
    return _upload(folder, repo_id, token, private, commit_message)


def _upload(folder: str | Path, repo_id: str, token: str | None, private: bool, commit_message: str) -> str:
    """Create the repo if needed and upload ``folder`` (already checked); returns the repo URL."""
    api = HfApi(token=token)
    url = api.create_repo(repo_id, exist_ok=True, private=private)
    api.upload_folder(repo_id=url.repo_id, folder_path=str(folder), commit_message=commit_message)
    return str(url)


def _check_online() -> None:
    if is_offline_mode():
        raise HubUnreachableError("HF_HUB_OFFLINE=1 is set, so nothing can be pushed: set HF_HUB_OFFLINE=0 and "
                                  "log in (hf auth login, or pass token=...), or use save_pretrained(...) to "
                                  "write the folder locally")


def push_checkpoint_to_hub(checkpoint_path: str | Path, repo_id: str, *, use_ema: bool = True, **kwargs: Any) -> str:
    """Push the generator of a training checkpoint, with class names and data name taken from the checkpoint.

    Args:
        checkpoint_path: a checkpoint file, or a run folder (its latest checkpoint).
        repo_id: ``"owner/name"``.
        use_ema: upload the EMA weights when the checkpoint has them.
        **kwargs: passed to :func:`push_to_hub`; explicit ``class_names``/``training_data``/``extra`` win.
    Returns:
        The repo URL.
    """
    generator, checkpoint = generator_from_checkpoint(checkpoint_path, use_ema=use_ema)
    meta = checkpoint.meta
    model_name = meta["model"]
    kwargs.setdefault("class_names", meta["data"]["class_names"])
    kwargs.setdefault("training_data", dataset_name(meta))
    kwargs.setdefault("dataset", meta["data"].get("dataset"))
    kwargs.setdefault("extra", {"checkpoint": checkpoint.path.name, "step": meta.get("step"), "use_ema": use_ema})
    return push_to_hub(generator, repo_id, model_name=model_name, **kwargs)


def _resolve_folder(repo_id_or_path: str | Path, revision: str | None, files: list[str]) -> Path:
    """A local folder as is; a Hub id through ``snapshot_download`` (the HF cache when offline)."""
    path = Path(repo_id_or_path).expanduser()
    if path.is_dir():
        if revision is not None:
            raise ValueError(f"revision={revision!r} applies to Hub repos, but {path} is a local folder")
        return path
    if path.is_file():
        raise PretrainedError(f"{path} is a file: pass the folder that holds {CONFIG_NAME} and {WEIGHTS_NAME}")
    try:
        return Path(snapshot_download(str(repo_id_or_path), revision=revision, allow_patterns=files))
    except HFValidationError:
        raise PretrainedError(f"{repo_id_or_path!r} is neither an existing folder nor a Hub repo id "
                              "('owner/name')") from None
    except LocalEntryNotFoundError as error:
        raise HubUnreachableError(
            f"cannot load {repo_id_or_path!r}: the Hub is unreachable (offline mode or no network) and the repo "
            f"is not in the local Hugging Face cache. Set HF_HUB_OFFLINE=0 and log in (hf auth login) to "
            f"download it, or pass a local folder written by save_pretrained (no folder {path.resolve()} "
            f"exists).") from error


def _read_config(folder: Path) -> dict[str, Any]:
    config_path = folder / CONFIG_NAME
    if not config_path.is_file():
        raise PretrainedError(f"{folder} has no {CONFIG_NAME}; a pretrained folder needs {CONFIG_NAME} and "
                              f"{WEIGHTS_NAME} (write one with save_pretrained)")
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise PretrainedError(f"{config_path} is not valid JSON ({error})") from None
    if not isinstance(config, dict) or "medgan_format" not in config:
        raise PretrainedError(f"{config_path} is not a MedGAN config (no 'medgan_format' key); "
                              "this repo was not written by medgan_core.hub")
    if int(config["medgan_format"]) > FORMAT_VERSION:
        raise PretrainedError(f"{config_path} has medgan_format {config['medgan_format']}, newer than this "
                              f"medgan_core understands ({FORMAT_VERSION}); upgrade medgan_core")
    return config


def _classes_note(config: dict[str, Any], num_classes: int) -> str:
    """The training classes for the card's data section (an unconditional model saw them pooled)."""
    if not config["training_classes"]:
        return ""
    pooled = "" if num_classes else " (pooled: the generator is unconditional)"
    return f"\n\nClasses: {', '.join(config['training_classes'])}{pooled}."


def _fingerprint_note(config: dict[str, Any]) -> str:
    """The training data's fingerprint for the card, when recorded (comparisons check it)."""
    identity = config.get("dataset")
    if not identity:
        return ""
    return f"\n\nData fingerprint: `{identity['fingerprint']}` ({identity['num_files']} image files)."


def _model_card(config: dict[str, Any], description: str, has_samples: bool, repo_id: str | None,
                license: str) -> str:
    """The README.md model card (Hugging Face front matter + markdown) for a saved ``config``."""
    model, model_config, names = config["model"], config["model_config"], config["class_names"]
    num_classes = int(model_config.get("num_classes", 0))
    channels, size, _ = config["output_shape"]
    mask = bool(model_config.get("with_mask"))
    channels -= int(mask)
    tags = "".join(f"- {tag}\n" for tag in (*TAGS, model))
    if num_classes:
        classes = ", ".join(f"{index} = {name}" for index, name in enumerate(names)) or f"{num_classes} (unnamed)"
        kind = f"class-conditional: `G(z, labels)` with labels {classes}"
    else:
        kind = "unconditional: `G(z)`"
    if config["metrics"]:
        rows = "".join(f"| {name} | {value:.4g} |\n" for name, value in config["metrics"].items())
        metrics = f"| metric | value |\n|---|---|\n{rows}"
        if config.get("metrics_measured_on"):
            metrics += f"\nMeasured on {config['metrics_measured_on']}.\n"
    else:
        metrics = "No metrics computed yet.\n"
    samples = ""
    if has_samples:
        layout = "one row per class, in label order" if num_classes else f"{GRID_COLUMNS} images per row"
        samples = f"## Samples\n\n![Generated samples]({SAMPLES_NAME})\n\nSeed {SAMPLE_SEED}, {layout}.\n\n"
    label_example = "labels=0, " if num_classes else ""
    return (
        f"---\nlibrary_name: medgan\nlicense: {license}\ntags:\n{tags}---\n\n"
        f"# {repo_id or f'MedGAN {model} generator'}\n\n"
        f"A `{model}` generator ({description}) trained with medgan_core {config['medgan_core_version']}. "
        f"It produces {size}x{size} {'grayscale' if channels == 1 else 'RGB'} synthetic brain MRI images"
        f"{' with their segmentation masks (last channel)' if mask else ''} "
        f"from a standard normal latent of size {config.get('z_dim') or model_config['z_dim']}; it is {kind}.\n\n"
        "> **Not for clinical use.** Synthetic images for research and education only; see *Intended use and "
        "limitations* below.\n\n"
        f"## Training data\n\n{config['training_data'] or 'Not recorded.'}{_classes_note(config, num_classes)}"
        f"{_fingerprint_note(config)}\n\n"
        f"## Metrics\n\n{metrics}\n"
        f"{samples}"
        "## Usage\n\n```python\nfrom medgan_core.hub import from_pretrained\nfrom medgan_core.sampling import "
        f"sample, save_grid\n\nG = from_pretrained(\"{repo_id or 'owner/name'}\")\n"
        f"images = sample(G, 16, {label_example}seed=0)  # (16, {channels}, {size}, {size}) in [-1, 1]\n"
        "save_grid(images, \"generated.png\")\n```\n\n"
        f"## Intended use and limitations\n\n{DISCLAIMER}\n"
    )
