"""The training loop: exact resume after SIGKILL, budget, non-finite stop, logs, checkpoints."""
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from medgan_core import losses
from medgan_core.checkpoint import CheckpointError, generator_from_checkpoint, load_checkpoint
from medgan_core.sampling import sample
from medgan_core.train import NonFiniteLossError, fit
from train_worker import (AUGMENT, MASKED_MODELS, MODEL_CONFIG, MODEL_TRAIN, TINY_MODEL, tiny_image_set,
                          tiny_train_config)

WORKER = Path(__file__).with_name("train_worker.py")


def _run_worker(*args, wait=True):
    env = {**os.environ, "PYTHONPATH": str(WORKER.parent)}
    command = [sys.executable, str(WORKER), *map(str, args)]
    if wait:
        subprocess.run(command, env=env, check=True, timeout=300)
        return None
    return subprocess.Popen(command, env=env)


def kill_and_resume(tmp_path, model, n=4):
    """Train ``model`` (``train_worker`` names) 2n steps straight, and again killed by SIGKILL after step n + 1 with
    its checkpoint at n, then resumed to 2n; asserts that every saved tensor and the history match.

    Returns:
        The straight run's final checkpoint, its history and the resumed run's history.
    """
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    _run_worker(straight, model, 2 * n, n)

    marker = tmp_path / "marker"
    process = _run_worker(killed, model, 2 * n, n, n + 1, marker, wait=False)
    deadline = time.monotonic() + 120
    while not marker.exists():  # step n is checkpointed, step n+1 done but not saved when we kill
        assert process.poll() is None, "worker exited before reaching the kill point"
        assert time.monotonic() < deadline, "worker never reached the kill point"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert sorted(p.name for p in (killed / "checkpoints").iterdir()) == [f"step-{n:08d}.safetensors"]

    _run_worker(killed, model, 2 * n, n)  # resumes from step n
    a = load_checkpoint(straight / "checkpoints" / f"step-{2 * n:08d}.safetensors")
    b = load_checkpoint(killed / "checkpoints" / f"step-{2 * n:08d}.safetensors")
    weights = [k for k in a.tensors if k.split(".")[0] in ("G", "D", "G_ema", "opt_g", "opt_d", "augment", "objective")]
    assert len(weights) > 10
    for key in weights:
        assert torch.equal(a.tensors[key], b.tensors[key]), f"{key} differs after resume"
    history_a = pd.read_csv(straight / "history.csv")
    history_b = pd.read_csv(killed / "history.csv")
    assert history_a["step"].tolist() == history_b["step"].tolist() == list(range(1, 2 * n + 1))
    pd.testing.assert_series_equal(history_a["g_loss"], history_b["g_loss"])
    return a, history_a, history_b


@pytest.mark.slow  # two subprocess training runs each
@pytest.mark.parametrize("model", ["dcgan", "cdcgan", "wgan-gp", "progan", "stylegan2+ada", "cstylegan2+diffaugment",
                                   "dcgan+ada", "alpha-gan-gp"])
def test_resume_after_sigkill_is_bit_identical(tmp_path, model):
    """Kill at step 5 (checkpoint at 4), resume to 8; ProGAN's checkpoint is mid-fade and the resume crosses into
    the 16 px stage at step 6. StyleGAN2 runs R1 and path length every 2 steps, and ADA's p moves every step, so
    their state (p, path-length mean, w_avg) must survive the kill too."""
    checkpoint, history_a, history_b = kill_and_resume(tmp_path, model)
    if "ada" in model:
        assert checkpoint.tensors["augment.p"].item() > 0  # p moved, so resuming it is tested
        pd.testing.assert_series_equal(history_a["aug_p"], history_b["aug_p"])
    if model.startswith("stylegan2"):
        assert checkpoint.tensors["objective.pl_mean"].item() > 0 and "G.w_avg" in checkpoint.tensors


def test_fit_writes_logs_samples_and_a_self_describing_checkpoint(tmp_path):
    data = tiny_image_set()
    result = fit("cdcgan", data, tiny_train_config(6, 3, sample_every=3, log_every=2), tmp_path,
                 model_config=TINY_MODEL)
    assert result.step == 6 and result.stopped == "completed"
    history = pd.read_csv(tmp_path / "history.csv")
    assert history["step"].tolist() == [2, 4, 6]
    assert {"d_loss", "g_loss", "d_real", "d_fake", "img_per_s", "epoch", "images_seen"} <= set(history.columns)
    assert len((tmp_path / "log.jsonl").read_text().splitlines()) == 3
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == ["step-00000003.png", "step-00000006.png"]

    checkpoint = load_checkpoint(result.checkpoint)
    meta = checkpoint.meta
    assert meta["model"] == "cdcgan" and meta["step"] == 6
    assert meta["model_config"]["num_classes"] == 3 and meta["model_config"]["image_size"] == 32
    assert meta["data"]["class_names"] == ["class0", "class1", "class2"]
    assert meta["train_config"]["batch_size"] == 8
    # the generator is rebuilt from the file alone and matches the returned G_ema
    rebuilt, _ = generator_from_checkpoint(result.checkpoint)
    torch.testing.assert_close(sample(rebuilt, 6, seed=1), sample(result.generator, 6, seed=1))  # channels_last vs contiguous: float noise only
    with pytest.raises(CheckpointError, match="for model 'cdcgan', not 'dcgan'"):
        generator_from_checkpoint(result.checkpoint, expected_model="dcgan")


def test_resume_into_a_folder_of_another_model_is_refused(tmp_path):
    data = tiny_image_set()
    fit("dcgan", data, tiny_train_config(1, 1), tmp_path, model_config=TINY_MODEL)
    with pytest.raises(CheckpointError, match="holds a checkpoint of 'dcgan'"):
        fit("cdcgan", data, tiny_train_config(2, 1), tmp_path, model_config=TINY_MODEL)
    with pytest.raises(CheckpointError, match="use a new run_dir"):
        fit("dcgan", data, tiny_train_config(2, 1), tmp_path, model_config={**TINY_MODEL, "z_dim": 16})


def test_wall_clock_budget_stops_cleanly_with_a_checkpoint(tmp_path):
    result = fit("dcgan", tiny_image_set(), tiny_train_config(1000, 500, max_minutes=1e-6), tmp_path,
                 model_config=TINY_MODEL)
    assert result.stopped == "time budget"
    assert result.step == 1
    assert result.checkpoint.name == "step-00000001.safetensors"
    assert load_checkpoint(result.checkpoint).meta["step"] == 1


def test_non_finite_loss_stops_naming_the_step_and_keeps_the_good_checkpoint(tmp_path, monkeypatch):
    calls = {"n": 0}
    original = losses.OBJECTIVES["nonsaturating"]

    def poisoned_g_loss(D, fake, labels):
        calls["n"] += 1
        loss, stats = original.g_loss(D, fake, labels)  # the nonsaturating recipe has no options
        return (loss * math.nan if calls["n"] == 3 else loss), stats

    monkeypatch.setitem(losses.OBJECTIVES, "nonsaturating",
                        losses.Objective("nonsaturating", original.d_loss, poisoned_g_loss))
    with pytest.raises(NonFiniteLossError, match="NaN/inf at step 3.*step-00000002.safetensors"):
        fit("dcgan", tiny_image_set(), tiny_train_config(10, 2, log_every=5), tmp_path, model_config=TINY_MODEL)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-00000002.safetensors"]


def test_model_config_contradicting_the_data_fails_clearly(tmp_path):
    with pytest.raises(ValueError, match="image_size=64 but the training data has image_size=32"):
        fit("dcgan", tiny_image_set(), tiny_train_config(1, 1), tmp_path, model_config={"image_size": 64})


def test_corrupt_checkpoint_reports_what_to_do(tmp_path):
    result = fit("dcgan", tiny_image_set(), tiny_train_config(1, 1), tmp_path, model_config=TINY_MODEL)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(result.checkpoint.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="not a readable safetensors checkpoint"):
        load_checkpoint(truncated)


def test_resume_false_refuses_to_mix_two_runs_in_one_folder(tmp_path):
    fit("dcgan", tiny_image_set(), tiny_train_config(1, 1), tmp_path, model_config=TINY_MODEL)
    with pytest.raises(FileExistsError, match="already holds a run"):
        fit("dcgan", tiny_image_set(), tiny_train_config(1, 1), tmp_path, model_config=TINY_MODEL, resume=False)


def test_latest_checkpoint_is_by_step_number_and_ignores_stray_files(tmp_path):
    from medgan_core.checkpoint import find_latest_checkpoint

    for name in ["step-00000009.safetensors", "step-00000010.safetensors", "step-final.safetensors",
                 ".step-00000011.safetensors.abc.tmp"]:
        (tmp_path / name).write_bytes(b"")
    assert find_latest_checkpoint(tmp_path).name == "step-00000010.safetensors"
    assert find_latest_checkpoint(tmp_path / "missing") is None


def test_checkpoint_files_get_normal_permissions(tmp_path):
    result = fit("dcgan", tiny_image_set(), tiny_train_config(1, 1), tmp_path, model_config=TINY_MODEL)
    umask = os.umask(0)
    os.umask(umask)
    assert result.checkpoint.stat().st_mode & 0o777 == 0o666 & ~umask


def test_wgan_gp_runs_n_critic_steps_and_logs_the_wasserstein_estimate(tmp_path):
    config = tiny_train_config(4, 4, log_every=2, **MODEL_TRAIN["wgan-gp"], loss_options={"drift": 1e-3})
    result = fit("wgan-gp", tiny_image_set(), config, tmp_path, model_config=TINY_MODEL)
    history = pd.read_csv(tmp_path / "history.csv")
    assert {"wasserstein", "gp", "d_loss", "g_loss"} <= set(history.columns)
    assert history["images_seen"].tolist() == [2 * 5 * 8, 4 * 5 * 8]  # 5 critic batches per generator step
    meta = load_checkpoint(result.checkpoint).meta
    assert meta["train_config"]["n_critic"] == 5 and meta["train_config"]["loss_options"] == {"drift": 1e-3}


def test_progan_grows_with_per_stage_batches_and_saves_each_stage(tmp_path):
    result = fit("progan", tiny_image_set(), tiny_train_config(8, 4, **MODEL_TRAIN["progan"]), tmp_path,
                 model_config=MODEL_CONFIG["progan"])
    history = pd.read_csv(tmp_path / "history.csv")
    assert history["stage"].tolist() == [0, 0, 0, 1, 1, 1, 2, 2]
    assert history["alpha"].tolist()[3:6] == [round(1 / 3, 4), round(2 / 3, 4), 1.0]
    assert history["images_seen"].diff().dropna().unique().tolist() == [8]
    assert sorted(p.name for p in (tmp_path / "samples").glob("stage-*.png")) == ["stage-0.png", "stage-1.png",
                                                                                   "stage-2.png"]
    rebuilt, checkpoint = generator_from_checkpoint(result.checkpoint)
    assert (rebuilt._stage, checkpoint.meta["step"]) == (2, 8)
    assert sample(rebuilt, 2, seed=0).shape == (2, 1, 16, 16)  # a loaded generator keeps its trained resolution


def test_during_a_fade_in_the_real_images_are_blended_like_the_fakes():
    from medgan_core.train import Stage, StageBatches

    def first_batch(stage):
        batches = StageBatches(tiny_image_set(), tiny_train_config(4, 4), torch.device("cpu"))
        batches.enter(stage, 0)
        return next(batches)[0]

    sharp = first_batch(Stage(1, 0.25, 8, 0, 16))  # a growth plan without fade_reals (SinGAN-Seg)
    faded = first_batch(Stage(1, 0.25, 8, 0, 16, fade_reals=True))
    coarse = torch.nn.functional.interpolate(torch.nn.functional.avg_pool2d(sharp, 2), scale_factor=2)
    torch.testing.assert_close(faded, 0.25 * sharp + 0.75 * coarse)
    torch.testing.assert_close(first_batch(Stage(1, 1.0, 8, 0, 16, fade_reals=True)), sharp)  # faded in: as is
    torch.testing.assert_close(first_batch(Stage(0, 0.25, 8, 0, 4, fade_reals=True)),
                               first_batch(Stage(0, 0.25, 8, 0, 4)))  # the first stage has nothing to fade from


def test_progan_ema_warm_up_restarts_with_each_stage(tmp_path):
    """The 8 px block enters at step 30; two steps later G_ema's copy of it must track G, not its untrained init."""
    model_config = {**MODEL_CONFIG["progan"], "stage_images": 8 * 30}
    train = tiny_train_config(32, 30, **MODEL_TRAIN["progan"])
    fit("progan", tiny_image_set(), train, tmp_path, model_config=model_config)
    at_stage_start = load_checkpoint(tmp_path / "checkpoints" / "step-00000030.safetensors").tensors
    final = load_checkpoint(tmp_path / "checkpoints" / "step-00000032.safetensors").tensors
    key = "to_image.1.weight"  # the 8 px output layer: untouched until step 30
    torch.testing.assert_close(at_stage_start[f"G.{key}"], at_stage_start[f"G_ema.{key}"])
    trained = final[f"G.{key}"]
    lag = (final[f"G_ema.{key}"] - trained).norm() / (at_stage_start[f"G.{key}"] - trained).norm()
    assert lag < 0.25  # a ramp-up over the whole run (half-life 12 images at step 30) would leave ~0.4 of the init


def test_ema_half_life_is_reached_after_exactly_ema_kimg_thousand_images():
    from medgan_core.train import ema_beta, update_ema

    ema, model = torch.nn.Linear(1, 1, bias=False), torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(ema.weight)
    torch.nn.init.ones_(model.weight)
    for _ in range(10):  # 10 steps of 8 images = 80 images = the half-life
        update_ema(ema, model, ema_beta(8, 10_000, ema_kimg=0.08, rampup=None))
    assert math.isclose(ema.weight.item(), 0.5, rel_tol=1e-6)
    # batch size does not change the window: 5 steps of 16 images give the same average
    torch.nn.init.zeros_(ema.weight)
    for _ in range(5):
        update_ema(ema, model, ema_beta(16, 10_000, ema_kimg=0.08, rampup=None))
    assert math.isclose(ema.weight.item(), 0.5, rel_tol=1e-6)
    # ramp-up: the half-life is at most 5% of the images seen; none seen yet copies G; ema_kimg 0 turns it off
    assert ema_beta(8, 1_000, ema_kimg=10, rampup=0.05) == 0.5 ** (8 / 50)
    assert ema_beta(8, 0, ema_kimg=10, rampup=0.05) == 0.0 == ema_beta(8, 1_000, ema_kimg=0, rampup=None)


def test_resume_applies_changed_learning_rates_and_names_them(tmp_path):
    data = tiny_image_set()
    fit("dcgan", data, tiny_train_config(2, 2), tmp_path, model_config=TINY_MODEL)
    with pytest.warns(UserWarning, match=r"changed settings, applied from step 2: lr_g 0.0002 -> 0.0001"):
        fit("dcgan", data, tiny_train_config(3, 3, lr_g=1e-4), tmp_path, model_config=TINY_MODEL)
    meta = load_checkpoint(tmp_path / "checkpoints" / "step-00000003.safetensors").meta
    assert meta["optimizers"]["opt_g"]["param_groups"][0]["lr"] == 1e-4 == meta["train_config"]["lr_g"]


def test_resume_falls_back_past_an_unreadable_newest_checkpoint_and_keeps_it(tmp_path):
    data = tiny_image_set()
    fit("dcgan", data, tiny_train_config(4, 2), tmp_path, model_config=TINY_MODEL)
    newest = tmp_path / "checkpoints" / "step-00000004.safetensors"
    newest.write_bytes(newest.read_bytes()[:500])  # a copy cut short
    with pytest.warns(UserWarning, match="step-00000004.safetensors is not a readable.*kept as "
                                         "step-00000004.safetensors.unreadable"):
        result = fit("dcgan", data, tiny_train_config(4, 2), tmp_path, model_config=TINY_MODEL)
    assert result.step == 4 and (tmp_path / "checkpoints" / "step-00000004.safetensors.unreadable").exists()
    assert pd.read_csv(tmp_path / "history.csv")["step"].tolist() == [1, 2, 3, 4]


def test_resume_with_another_augmentation_is_refused(tmp_path):
    data = tiny_image_set()
    fit("dcgan", data, tiny_train_config(1, 1, augment="ada"), tmp_path, model_config=TINY_MODEL)
    with pytest.raises(CheckpointError, match="trained with augment='ada', not 'none'.*ADA p"):
        fit("dcgan", data, tiny_train_config(2, 1), tmp_path, model_config=TINY_MODEL)


def test_history_csv_columns_hold_their_own_values_when_a_window_reports_keys_in_another_order(tmp_path):
    """Steps 1-3 report r1 after g_loss (first at step 2), steps 4-6 before it (step 4 is an R1 step): same columns,
    another order. history.csv once appended such rows in their own order, under the header of the first."""
    train = tiny_train_config(6, 6, log_every=3, **MODEL_TRAIN["stylegan2"])
    fit("stylegan2", tiny_image_set(), train, tmp_path, model_config=MODEL_CONFIG["stylegan2"])
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert list(rows[0]).index("r1") > list(rows[0]).index("g_loss") > list(rows[1]).index("r1")  # the premise
    history = pd.read_csv(tmp_path / "history.csv")
    for key in rows[0]:
        assert history[key].tolist() == pytest.approx([row[key] for row in rows]), key


def test_stylegan2_lazy_regularisers_run_on_their_intervals_and_are_logged(tmp_path):
    train = tiny_train_config(4, 4, log_every=1, **MODEL_TRAIN["stylegan2"], **AUGMENT["ada"])
    result = fit("stylegan2", tiny_image_set(), train, tmp_path, model_config=MODEL_CONFIG["stylegan2"])
    history = pd.read_csv(tmp_path / "history.csv")
    # R1 every 2 D steps, path length every 2 G steps: logged on those steps only
    assert history["r1"].notna().tolist() == [False, True, False, True]
    assert history["pl_penalty"].notna().tolist() == [False, True, False, True]
    assert history["aug_p"].nunique() == 4  # ADA's p moves at every D step (interval 1) and is logged
    meta = load_checkpoint(result.checkpoint).meta
    lr, betas = meta["optimizers"]["opt_d"]["param_groups"][0]["lr"], meta["optimizers"]["opt_d"]["param_groups"][0]["betas"]
    assert math.isclose(lr, 2.5e-3 * 2 / 3) and math.isclose(betas[1], 0.99 ** (2 / 3))
    assert meta["loss_options"]["r1_gamma"] == 0.0002 * 32 ** 2 / 8  # the automatic rule, recorded


@pytest.mark.parametrize("model", ["dcgan", "cdcgan", "wgan-gp", "progan", "stylegan2", "cstylegan2", "alpha-gan-gp"])
def test_the_amp_path_runs_for_every_model_with_bfloat16_on_the_cpu(tmp_path, model):
    """The CUDA branch (autocast + GradScaler) exercised on a CPU with bfloat16, so a typo in it fails here."""
    config = tiny_train_config(2, 2, amp="bf16", **MODEL_TRAIN.get(model, {}))
    result = fit(model, tiny_image_set(masks=model in MASKED_MODELS), config, tmp_path,
                 model_config=MODEL_CONFIG.get(model, TINY_MODEL))
    assert result.step == 2 and result.history[["d_loss", "g_loss"]].notna().all().all()
    scalers = load_checkpoint(result.checkpoint).meta["scalers"]
    assert scalers["g"]["scale"] > 0 and scalers["d"]["scale"] > 0  # the scalers ran (an unused one saves {})


def test_a_run_resumes_with_amp_switched_on_and_off_naming_the_change(tmp_path):
    """Saved without AMP (as on a CPU), resumed with it (as on CUDA): the scaler starts fresh; and back."""
    data = tiny_image_set()
    fit("dcgan", data, tiny_train_config(2, 2, amp=False), tmp_path, model_config=TINY_MODEL)
    with pytest.warns(UserWarning, match="amp False -> 'bf16'"):
        resumed = fit("dcgan", data, tiny_train_config(4, 2, amp="bf16"), tmp_path, model_config=TINY_MODEL)
    assert resumed.step == 4 and load_checkpoint(resumed.checkpoint).meta["scalers"]["g"]
    with pytest.warns(UserWarning, match="amp 'bf16' -> False"):
        assert fit("dcgan", data, tiny_train_config(6, 2, amp=False), tmp_path, model_config=TINY_MODEL).step == 6
    with pytest.raises(ValueError, match="amp='fp16' needs CUDA"):
        fit("dcgan", data, tiny_train_config(1, 1, amp="fp16"), tmp_path / "fp16", model_config=TINY_MODEL)


def test_training_latents_come_from_a_cpu_generator_whatever_the_device():
    from medgan_core.train import Recipe, TrainState

    state = TrainState.create(Recipe.create("dcgan", tiny_image_set(), tiny_train_config(1, 1), TINY_MODEL))
    assert state.noise.device.type == "cpu"  # the same latents on CPU and CUDA, so a run can move between them
    expected = torch.randn(3, TINY_MODEL["z_dim"], generator=torch.Generator().manual_seed(7 + 1))
    assert torch.equal(state.latents(3, TINY_MODEL["z_dim"]), expected)
