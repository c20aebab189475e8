"""Models are registered by name and built from their config dataclass.

Each file in ``medgan_core/models/`` holds one GAN: a config dataclass, a Generator, a
Discriminator, and a ``build`` function decorated with :func:`register_model`. Everything
else (training loop, checkpoints, hub, notebooks) picks a model by its string name.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

import torch.nn as nn

from .config import from_dict


@dataclass(frozen=True)
class ModelSpec:
    """What the registry knows about one GAN."""

    name: str
    config_cls: type  # dataclass of architecture settings
    build: Callable[[Any], tuple[nn.Module, nn.Module]]  # config -> (generator, discriminator)
    objective: str  # loss recipe name in medgan_core.losses.OBJECTIVES
    conditional: bool  # generator takes class labels
    description: str
    growth: Callable | None = None  # (config, step, n_critic) -> plan with stage/alpha/batch_size (progressive GANs)


_MODELS: dict[str, ModelSpec] = {}


def register_model(name: str, *, config: type, objective: str = "nonsaturating",
                   conditional: bool = False, description: str = "", growth: Callable | None = None) -> Callable:
    """Decorator registering a ``build(config) -> (G, D)`` function under ``name``.

    Args:
        name: the string users pass (``"dcgan"``).
        config: the model's config dataclass.
        objective: loss recipe used by the training loop.
        conditional: whether G and D take class labels.
        description: one line shown by :func:`list_models`.
        growth: for growing models, ``growth(config, step, n_critic)`` -> the step's ``models.layers.GrowthStep``
            (stage, alpha, batch size, resolution, total steps, lr factor); G and D then need
            ``set_growth(stage, alpha)`` (``models.layers.Growing``).
    Returns:
        The decorator (it returns the build function unchanged).
    """
    def decorator(build: Callable) -> Callable:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        _MODELS[name] = ModelSpec(name, config, build, objective, conditional, description, growth)
        return build
    return decorator


def register_model_pair(name: str, conditional_name: str, *, config: type, objective: str, description: str,
                        conditional_description: str) -> Callable:
    """Decorator registering one ``build(config)`` twice: ``name`` for ``num_classes == 0`` and ``conditional_name``
    (conditional) for ``num_classes > 0``; each refuses the other's configs with a message naming the right one.

    Args:
        name: the unconditional model's name.
        conditional_name: the class-conditional model's name.
        config: the shared config dataclass (with ``num_classes``).
        objective: loss recipe of both.
        description: one line for ``name``.
        conditional_description: one line for ``conditional_name``.
    Returns:
        The decorator (it returns the build function unchanged).
    """
    def decorator(build: Callable) -> Callable:
        def unconditional(model_config: Any) -> tuple[nn.Module, nn.Module]:
            if model_config.num_classes:
                raise ValueError(f"{name} is unconditional (num_classes=0); use {conditional_name!r} for class labels")
            return build(model_config)

        def conditional(model_config: Any) -> tuple[nn.Module, nn.Module]:
            if not model_config.num_classes:
                raise ValueError(f"{conditional_name} needs num_classes > 0 (fit() takes it from the data)")
            return build(model_config)

        register_model(name, config=config, objective=objective, description=description)(unconditional)
        register_model(conditional_name, config=config, objective=objective, conditional=True,
                       description=conditional_description)(conditional)
        return build
    return decorator


def _ensure_models_imported() -> None:
    from . import models  # noqa: F401  (importing the package registers every model)


def list_models() -> dict[str, str]:
    """Registered model names mapped to their one-line description."""
    _ensure_models_imported()
    return {name: spec.description for name, spec in sorted(_MODELS.items())}


def get_model_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` registered as ``name``.

    Raises:
        KeyError: listing the valid names.
    """
    _ensure_models_imported()
    if name not in _MODELS:
        raise KeyError(f"unknown model {name!r}; registered models: {sorted(_MODELS)}")
    return _MODELS[name]


def make_config(name: str, values: dict[str, Any] | None = None, **overrides: Any):
    """Build model ``name``'s config from a dict (e.g. read from a checkpoint) plus overrides.

    Args:
        name: registered model name.
        values: field values; missing fields take their defaults.
        **overrides: fields that win over ``values``.
    Returns:
        The config dataclass instance.
    """
    spec = get_model_spec(name)
    merged = {**(values or {}), **overrides}
    try:
        return from_dict(spec.config_cls, merged)
    except ValueError as error:
        raise ValueError(f"settings do not fit model {name!r}: {error}") from None


def stored_config(name: str, values: dict[str, Any]):
    """Model ``name``'s config as stored in a checkpoint or Hub ``config.json``.

    A field added after such files were written declares, in its metadata ``absent_in_old_files``, the value that
    files without it meant (e.g. ProGAN's ``as_in_paper=False``), so they rebuild the network they were trained with;
    other missing fields take their defaults.

    Args:
        name: registered model name.
        values: the stored field values.
    Returns:
        The config dataclass instance.
    """
    meant = {f.name: f.metadata["absent_in_old_files"] for f in dataclasses.fields(get_model_spec(name).config_cls)
             if "absent_in_old_files" in f.metadata and f.name not in values}
    return make_config(name, {**values, **meant})


def build_model(name: str, config: Any = None, **overrides: Any) -> tuple[nn.Module, nn.Module, Any]:
    """Build generator and discriminator of model ``name``.

    Args:
        name: registered model name.
        config: a config instance or dict; ``None`` uses the defaults.
        **overrides: config fields to change (``image_size=128``).
    Returns:
        ``(generator, discriminator, config)``.
    """
    spec = get_model_spec(name)
    if dataclasses.is_dataclass(config):
        config = dataclasses.replace(config, **overrides)
    else:
        config = make_config(name, config, **overrides)
    generator, discriminator = spec.build(config)
    return generator, discriminator, config
