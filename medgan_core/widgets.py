"""Interactive explorers for notebooks (the only module that imports ipywidgets).

Each explorer is a row of controls above a live picture. On every change the figure is redrawn with
:mod:`medgan_core.plotting` and shown as a PNG in an ``ipywidgets.Image``: unlike an ``Output`` area this
needs no kernel-side display hooks, does not flicker, and its current picture can be read back (tests do).
Sliders only report on release (``continuous_update=False``), so dragging does not queue a generator pass
per tick.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import ipywidgets as widgets
import torch
import torch.nn as nn
from matplotlib.figure import Figure

from .plotting import figure_png, plot_interpolation, show_images
from .sampling import class_names_for, latents, picture_array, png_bytes, sample, supports_truncation

if TYPE_CHECKING:
    from .turing import Trials

MAX_SEED = 9999


def class_explorer(generator: nn.Module, class_names: Sequence[str] | None = None, *, max_images: int = 32,
                   ordinal: bool = False) -> widgets.Widget:
    """Browse samples by seed, count and (for conditional generators) class.

    Args:
        generator: a medgan generator.
        class_names: one name per class (default ``class 0``...).
        max_images: upper end of the number-of-images slider.
        ordinal: pick the class with a slider instead of a dropdown, for ordered classes such as dementia stages.
    Returns:
        The widget (display it as a cell's last value or with ``IPython.display.display``).
    Raises:
        ValueError: for class names that do not match the generator.
    """
    names = class_names_for(generator, class_names)
    controls = {"seed": _seed_slider("seed", 0),
                "n": widgets.IntSlider(value=min(16, max_images), min=1, max=max_images, description="images",
                                       continuous_update=False)}
    if names:
        controls["label"] = _class_control(names, ordinal)

    def render(seed: int, n: int, label: int | None = None) -> Figure:
        title = f"{names[label]}, seed {seed}" if names else f"seed {seed}"
        return show_images(sample(generator, n, label, seed=seed), title=title)

    return _live_figure(controls, render)


def interpolation_explorer(generator: nn.Module, class_names: Sequence[str] | None = None, *,
                           ordinal: bool = False) -> widgets.Widget:
    """Walk the latent space between two seeds (and, for conditional generators, pick the class).

    Args:
        generator: a medgan generator.
        class_names: one name per class (default ``class 0``...).
        ordinal: pick the class with a slider instead of a dropdown.
    Returns:
        The widget.
    Raises:
        ValueError: for class names that do not match the generator.
    """
    names = class_names_for(generator, class_names)
    controls = {"seed_a": _seed_slider("seed A", 0), "seed_b": _seed_slider("seed B", 1),
                "steps": widgets.IntSlider(value=8, min=2, max=16, description="steps", continuous_update=False)}
    if names:
        controls["label"] = _class_control(names, ordinal)

    def render(seed_a: int, seed_b: int, steps: int, label: int | None = None) -> Figure:
        return plot_interpolation(generator, seed_a, seed_b, steps, label, class_names=names or None)

    return _live_figure(controls, render)


def truncation_explorer(generator: nn.Module, class_names: Sequence[str] | None = None, *,
                        max_images: int = 16) -> widgets.Widget:
    """Samples at a chosen truncation psi (StyleGAN2): 1 = full variety, 0 = the average image (of the class).

    Args:
        generator: a StyleGAN2 generator (``stylegan2`` or ``cstylegan2``).
        class_names: one name per class (default ``class 0``...).
        max_images: upper end of the number-of-images slider.
    Returns:
        The widget.
    Raises:
        ValueError: for a generator without truncation, or class names that do not match it.
    """
    if not supports_truncation(generator):
        raise ValueError("truncation_explorer needs a generator with a mapping network (stylegan2, cstylegan2)")
    names = class_names_for(generator, class_names)
    controls = {"psi": widgets.FloatSlider(value=1.0, min=0.0, max=1.0, step=0.05, description="psi",
                                           continuous_update=False),
                "seed": _seed_slider("seed", 0),
                "n": widgets.IntSlider(value=min(8, max_images), min=1, max=max_images, description="images",
                                       continuous_update=False)}
    if names:
        controls["label"] = _class_control(names, ordinal=False)

    def render(psi: float, seed: int, n: int, label: int | None = None) -> Figure:
        title = f"psi {psi:.2f}, seed {seed}" + (f", {names[label]}" if names else "")
        return show_images(sample(generator, n, label, seed=seed, truncation_psi=psi), title=title)

    return _live_figure(controls, render)


def scale_explorer(generator: nn.Module, class_names: Sequence[str] | None = None, *,
                   n: int = 8) -> widgets.Widget:
    """Keep a sample's coarse layout and redraw its finer scales (multi-scale generators such as ``alpha-gan-gp``).

    Args:
        generator: a generator with ``generate_from_coarse`` and ``sizes``.
        class_names: one name per class for conditional generators.
        n: images shown.
    Returns:
        The widget: the layout seed, the first redrawn scale (0: everything new; the number of scales: nothing)
        and the seed of the new fine noise.
    """
    names = class_names_for(generator, class_names)
    scales = len(generator.sizes)
    controls = {"seed": _seed_slider("layout seed", 0),
                "from_scale": widgets.IntSlider(value=max(scales - 1, 0), min=0, max=scales,
                                                description="redraw from", continuous_update=False),
                "fine_seed": _seed_slider("fine seed", 1)}
    if names:
        controls["label"] = _class_control(names, False)

    def render(seed: int, from_scale: int, fine_seed: int, label: int | None = None) -> Figure:
        device = next(generator.parameters()).device
        z = latents(n, generator.config.z_dim, seed).to(device)
        labels = None if label is None else torch.full((n,), label, dtype=torch.long, device=device)
        images = generator.eval().generate_from_coarse(z, from_scale, fine_seed, labels)
        kept = "none" if from_scale == 0 else f"{generator.sizes[from_scale - 1]} px and coarser"
        return show_images(images, title=f"layout of seed {seed} kept ({kept}), scales >= {from_scale} redrawn")

    return _live_figure(controls, render)


def turing_test(trials: "Trials", folder: str | Path, reader: str, *, ask_confidence: bool = True,
                ask_class: bool = False, display_size: int = 256) -> widgets.VBox:
    """The visual Turing test: one image at a time, Real / Synthetic buttons, each answer saved as it is given.

    A reader who comes back (same ``folder`` and ``reader``) continues at the first unanswered image.

    Args:
        trials: from :func:`medgan_core.turing.build_trials`.
        folder: where ``turing-<reader>.csv`` is appended to.
        reader: the reader's name.
        ask_confidence: a 1-5 confidence slider, saved with each answer.
        ask_class: a class dropdown (the reader's guess of the class), saved with each answer.
        display_size: on-screen width in pixels; the image keeps its resolution, scaled with nearest neighbours.
    Returns:
        The widget; ``widget.answers`` is the :class:`medgan_core.turing.AnswerLog`.
    """
    from .turing import AnswerLog

    log = AnswerLog(folder, reader, trials)
    classes = sorted(set(trials.table["class"]))
    picture = widgets.Image(format="png", layout=widgets.Layout(width=f"{display_size}px",
                                                                height=f"{display_size}px"))
    picture.add_class("medgan-pixelated")
    status = widgets.Label()
    confidence = widgets.IntSlider(value=3, min=1, max=5, description="confidence")
    class_guess = widgets.Dropdown(options=classes, description="class")
    buttons = {answer: widgets.Button(description=answer.capitalize(), button_style=style)
               for answer, style in (("real", "success"), ("synthetic", "warning"))}
    rows = [widgets.HBox(list(buttons.values()))]
    rows += [confidence] if ask_confidence else []
    rows += [class_guess] if ask_class else []

    def show() -> None:
        trial = log.next_trial
        done = len(log.answers)
        if trial is None:
            status.value = f"{reader}: all {len(trials)} images answered, thank you (saved to {log.path})"
            for button in buttons.values():
                button.disabled = True
            return
        picture.value = png_bytes(picture_array(trials.images[trial]))
        status.value = f"{reader}: image {done + 1} of {len(trials)} (answers saved to {log.path.name})"

    def answer_with(answer: str) -> Callable[[widgets.Button], None]:
        def on_click(_button: widgets.Button) -> None:
            trial = log.next_trial
            if trial is None:
                return
            log.record(trial, answer, confidence.value if ask_confidence else None,
                       class_guess.value if ask_class else None)
            show()
        return on_click

    for answer, button in buttons.items():
        button.on_click(answer_with(answer))
    show()
    box = widgets.VBox([widgets.HTML("<style>.medgan-pixelated img, img.medgan-pixelated "
                                     "{image-rendering: pixelated;}</style>"), status, picture, *rows])
    box.answers = log
    return box


def _seed_slider(description: str, value: int) -> widgets.IntSlider:
    return widgets.IntSlider(value=value, min=0, max=MAX_SEED, description=description, continuous_update=False)


def _class_control(names: list[str], ordinal: bool) -> widgets.ValueWidget:
    """A dropdown of class names, or a slider over them when the classes are ordered; the value is the label."""
    options = [(name, label) for label, name in enumerate(names)]
    if ordinal:
        return widgets.SelectionSlider(options=options, value=0, description="stage", continuous_update=False)
    return widgets.Dropdown(options=options, value=0, description="class")


def _live_figure(controls: dict[str, widgets.ValueWidget], render: Callable[..., Figure]) -> widgets.VBox:
    """Controls above a PNG of ``render(**values)``, redrawn whenever a control's value changes."""
    picture = widgets.Image(format="png", layout=widgets.Layout(max_width="100%"))

    def redraw(_change: dict | None = None) -> None:
        picture.value = figure_png(render(**{name: control.value for name, control in controls.items()}))

    for control in controls.values():
        control.observe(redraw, names="value")
    redraw()
    row = widgets.HBox(list(controls.values()), layout=widgets.Layout(flex_flow="row wrap"))
    return widgets.VBox([row, picture])
