"""Figures from tiny generators and synthetic histories: structure, channels, PNG output, clear errors."""
import io

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from medgan_core.sampling import class_names_for
from medgan_core.plotting import (figure_png, plot_class_grid, plot_interpolation, plot_losses,
                                  plot_sample_progression, show_images)
from medgan_core.sampling import save_grid

CLASSES = ["CN", "MCI", "AD"]


def history(**extra_columns) -> pd.DataFrame:
    steps = np.arange(10, 110, 10)
    return pd.DataFrame({"step": steps, "d_loss": np.linspace(1.4, 0.9, 10), "g_loss": np.linspace(0.7, 2.0, 10),
                         **{name: np.linspace(0, 1, 10) for name in extra_columns}})


def picture(fig, index: int = 0) -> np.ndarray:
    """The array drawn by the figure's (single) image on axes ``index``."""
    images = fig.axes[index].images
    assert len(images) == 1
    return np.asarray(images[0].get_array())


def test_losses_panels_follow_the_logged_columns():
    fig = plot_losses(history())
    assert len(fig.axes) == 1
    assert [line.get_label() for line in fig.axes[0].lines] == ["d_loss", "g_loss"]
    fig = plot_losses(history(d_real=1, d_fake=1, wasserstein=1, img_per_s=1))
    assert len(fig.axes) == 3
    assert [[line.get_label() for line in ax.lines] for ax in fig.axes] == [
        ["d_loss", "g_loss", "wasserstein"], ["d_real", "d_fake"], ["img_per_s"]]


def test_losses_smoothing_is_a_moving_average():
    frame = history()
    frame["d_loss"] = [0.0, 2.0] * 5
    raw, smooth = plot_losses(frame), plot_losses(frame, smooth=2)
    assert list(raw.axes[0].lines[0].get_ydata()) == [0.0, 2.0] * 5
    assert list(smooth.axes[0].lines[0].get_ydata()) == [0.0] + [1.0] * 9


@pytest.mark.parametrize("frame, message", [
    (pd.DataFrame(), "history is empty"),
    (pd.DataFrame(columns=["step", "d_loss", "g_loss"]), "history is empty"),
    (history().drop(columns=["g_loss"]), r"lacks column\(s\) \['g_loss'\]"),
], ids=["no columns", "no rows", "no g_loss"])
def test_losses_reject_unusable_histories(frame, message):
    with pytest.raises(ValueError, match=message):
        plot_losses(frame)


def test_losses_reject_a_zero_window():
    with pytest.raises(ValueError, match="smooth must be"):
        plot_losses(history(), smooth=0)


@pytest.mark.parametrize("channels, shape", [(1, (2 * 34 + 2, 3 * 34 + 2)), (3, (2 * 34 + 2, 3 * 34 + 2, 3))])
def test_show_images_tiles_the_batch(channels, shape):
    images = torch.rand(5, channels, 32, 32) * 2 - 1
    fig = show_images(images, nrow=3, title="five")
    assert len(fig.axes) == 1 and fig.axes[0].get_title() == "five"
    assert picture(fig).shape == shape  # 2 rows of 3 tiles, 2-px padding


def test_show_images_with_labels_gives_each_class_its_rows():
    images = torch.stack([torch.full((1, 32, 32), value) for value in (-1.0, 1.0, 1.0, 0.0, 0.0)])
    fig = show_images(images, labels=[2, 0, 0, 2, 2], class_names=CLASSES, nrow=2)
    grid = picture(fig)
    assert grid.shape == (3 * 34 + 2, 2 * 34 + 2)  # class 0: one row; class 2 (3 images): two rows
    assert grid[2 + 16, 2 + 16] == 255 and grid[2 + 16, 36 + 16] == 255  # row 0: the two class-0 images
    assert grid[36 + 16, 2 + 16] == 0 and grid[36 + 16, 36 + 16] == 128  # row 1: class 2 in batch order
    assert [tick.get_text() for tick in fig.axes[0].get_yticklabels()] == ["CN", "AD"]


def test_show_images_rejects_bad_input():
    with pytest.raises(ValueError, match="batch"):
        show_images(torch.zeros(3, 32, 32))
    with pytest.raises(ValueError, match="one label per image"):
        show_images(torch.zeros(3, 1, 32, 32), labels=[0, 1])
    with pytest.raises(ValueError, match="do not index the 3 class names"):
        show_images(torch.zeros(2, 1, 32, 32), labels=[0, 3], class_names=CLASSES)


def test_class_grid_has_one_named_row_per_class(conditional, tmp_path):
    fig = plot_class_grid(conditional, CLASSES, n_per_class=4, seed=1, save_to=tmp_path / "grid.png")
    assert len(fig.axes) == 1
    assert picture(fig).shape == (3 * 34 + 2, 4 * 34 + 2)
    assert [tick.get_text() for tick in fig.axes[0].get_yticklabels()] == CLASSES
    with Image.open(tmp_path / "grid.png") as saved:
        assert saved.format == "PNG" and saved.size[0] > 0


def test_class_grid_needs_a_conditional_generator_and_matching_names(conditional, unconditional):
    with pytest.raises(ValueError, match="needs a conditional generator"):
        plot_class_grid(unconditional)
    with pytest.raises(ValueError, match="2 class names for a generator with 3 classes"):
        plot_class_grid(conditional, ["a", "b"])


def test_interpolation_strip(conditional, unconditional):
    fig = plot_interpolation(conditional, 3, 4, steps=5, label=2, class_names=CLASSES)
    assert picture(fig).shape == (34 + 2, 5 * 34 + 2)
    assert fig.axes[0].get_title() == "seed 3 \u2192 seed 4, AD"
    fig = plot_interpolation(unconditional, 3, 4, steps=4)
    assert picture(fig).shape == (34 + 2, 4 * 34 + 2) and fig.axes[0].get_title() == "seed 3 \u2192 seed 4"


@pytest.mark.parametrize("channels", [1, 3])
def test_sample_progression_shows_evenly_spaced_grids_in_step_order(tmp_path, channels):
    for step in (1000, 200, 400, 600, 800):  # written out of order: sorting is by step number
        save_grid(torch.zeros(4, channels, 32, 32), tmp_path / "samples" / f"step-{step:08d}.png")
    save_grid(torch.zeros(4, channels, 32, 32), tmp_path / "samples" / "step-final.png")  # not fit()'s: ignored
    fig = plot_sample_progression(tmp_path, max_grids=3)
    assert [ax.get_title() for ax in fig.axes] == ["step 200", "step 600", "step 1000"]
    assert picture(fig).shape == ((2 * 34 + 2, 2 * 34 + 2) if channels == 1 else (2 * 34 + 2, 2 * 34 + 2, 3))
    assert len(plot_sample_progression(tmp_path).axes) == 5


def test_sample_progression_without_grids_fails_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="no samples/step"):
        plot_sample_progression(tmp_path)


def test_saving_writes_a_png_atomically(tmp_path):
    path = tmp_path / "figures" / "losses.png"
    fig = plot_losses(history(img_per_s=1), save_to=path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir()] == ["losses.png"]  # no temp file left behind
    with Image.open(io.BytesIO(figure_png(fig))) as rendered, Image.open(path) as saved:
        assert rendered.size == saved.size


def test_class_names_default_and_validation(conditional, unconditional):
    assert class_names_for(conditional) == ["class 0", "class 1", "class 2"]
    assert class_names_for(conditional, ("a", "b", "c")) == ["a", "b", "c"]
    assert class_names_for(unconditional) == []
    with pytest.raises(ValueError, match="1 class names for a generator with 0 classes"):
        class_names_for(unconditional, ["x"])


def test_stage_progression_shows_one_grid_per_stage_in_order(tmp_path):
    for stage in (2, 0, 1):
        size = 4 * 2 ** stage
        save_grid(torch.zeros(4, 1, size, size), tmp_path / "samples" / f"stage-{stage}.png")
    save_grid(torch.zeros(4, 1, 8, 8), tmp_path / "samples" / "step-00000010.png")
    fig = plot_sample_progression(tmp_path, kind="stage")
    assert [ax.get_title() for ax in fig.axes] == ["stage 0: 4 px", "stage 1: 8 px", "stage 2: 16 px"]
    with pytest.raises(ValueError, match="kind must be one of"):
        plot_sample_progression(tmp_path, kind="epoch")


def test_confusion_matrix_and_classifier_history_figures(tmp_path):
    from medgan_core.plotting import plot_classifier_history, plot_confusion_matrix

    fig = plot_confusion_matrix(np.array([[3, 1], [0, 4]]), ["a", "b"], save_to=tmp_path / "cm.png")
    assert (tmp_path / "cm.png").stat().st_size > 0 and "75%" in [t.get_text().split("\n")[-1] for t in fig.axes[0].texts]
    with pytest.raises(ValueError, match="does not fit 3 class names"):
        plot_confusion_matrix(np.eye(2), ["a", "b", "c"])
    history = [{"epoch": 1, "train_loss": 1.0, "val_loss": 1.1, "val_accuracy": 0.5},
               {"epoch": 2, "train_loss": 0.8, "val_loss": 0.9, "val_accuracy": 0.7}]
    assert len(plot_classifier_history(history).axes) == 2
    with pytest.raises(ValueError, match="empty"):
        plot_classifier_history([])


def test_a_wide_leaderboard_is_drawn_one_column_per_model(tmp_path):
    from medgan_core.compare import format_leaderboard
    from medgan_core.plotting import plot_leaderboard

    board = pd.DataFrame({"model": ["real", "gan"], "step": [np.nan, 1328.0], "img_per_s": [np.nan, 2960.4],
                          **{f"fd [x{k}]": [1.5, 212.3] for k in range(10)},
                          **{f"fd low [x{k}]": [1.0, 206.1] for k in range(10)},
                          **{f"fd high [x{k}]": [2.0, 1218.7] for k in range(10)}})
    shown = format_leaderboard(board)
    assert shown.loc[1, "step"] == "1,328" and shown.loc[1, "img_per_s"] == "2,960"  # not 1.33e+03
    assert shown.loc[1, "fd [x0]"] == "212 [206, 1,219]" and shown.loc[0, "step"] == ""
    figure = plot_leaderboard(shown, save_to=tmp_path / "board.png")
    texts = [cell.get_text().get_text() for cell in figure.axes[0].tables[0].get_celld().values()]
    assert {"score", "real", "gan", "fd [x9]"} <= set(texts)  # transposed: scores are rows
    assert plot_leaderboard(shown.iloc[:, :4]).axes[0].tables[0].get_celld()[0, 1].get_text().get_text() == "step"
    assert (tmp_path / "board.png").is_file()
