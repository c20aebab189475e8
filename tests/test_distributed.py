"""Several training processes (gloo on the CPU): they train like one process with the same global batch."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from medgan_core.checkpoint import load_checkpoint
from medgan_core.distributed import World, shard
from medgan_core.train import StageBatches, fit
from ddp_worker import DDP_TRAIN
from train_worker import MODEL_CONFIG, tiny_image_set, tiny_train_config

WORKER = Path(__file__).with_name("ddp_worker.py")


def torchrun(nproc: int, run_dir: Path, steps: int) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           f"--nproc_per_node={nproc}", str(WORKER), str(run_dir), str(steps)],
                          env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]


def generator_weights(run_dir: Path, step: int) -> dict[str, torch.Tensor]:
    checkpoint = load_checkpoint(run_dir / "checkpoints" / f"step-{step:08d}.safetensors")
    return {k: v for k, v in checkpoint.tensors.items() if k.startswith(("G.", "D.", "G_ema."))}


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-4, rtol=1e-4, msg=key)


@pytest.mark.slow  # torchrun starts two processes
def test_two_processes_train_like_one_and_a_run_moves_between_process_counts(tmp_path):
    """ProGAN across a stage change (steps 1-3 at 4 px, then fading in 8 px): 2 processes x 4 images per batch give
    the weights of 1 process x 8; a run saved by 2 processes resumes in 1 and lands on the same weights."""
    single = fit("progan", tiny_image_set(), tiny_train_config(6, 2, **DDP_TRAIN), tmp_path / "one",
                 model_config=MODEL_CONFIG["progan"])
    assert single.step == 6
    torchrun(2, tmp_path / "two", 6)
    assert_same_weights(generator_weights(tmp_path / "two", 6), generator_weights(tmp_path / "one", 6))
    assert (tmp_path / "two" / "history.csv").read_text().count("\n") == 7  # one writer: header + 6 rows

    torchrun(2, tmp_path / "moved", 4)
    fit("progan", tiny_image_set(), tiny_train_config(6, 2, **DDP_TRAIN), tmp_path / "moved",
        model_config=MODEL_CONFIG["progan"])
    assert_same_weights(generator_weights(tmp_path / "moved", 6), generator_weights(tmp_path / "one", 6))


def test_shards_are_strided_and_batches_must_split_evenly():
    batch = torch.arange(8)
    assert shard(batch, World(1, 2)).tolist() == [1, 3, 5, 7]  # keeps minibatch-stddev groups {j, j+4} together
    assert shard(batch, World()) is batch and shard(None, World(0, 2)) is None
    from medgan_core.train import Recipe, Schedule

    recipe = Recipe.create("dcgan", tiny_image_set(), tiny_train_config(1, 1), {"g_features": 4, "d_features": 4})
    stage = Schedule(recipe, tiny_image_set()).stage(0)
    batches = StageBatches(tiny_image_set(), recipe.train, recipe.device, World(0, 3))
    with pytest.raises(ValueError, match="batch size 8 .* does not split over 3 processes"):
        batches.enter(stage, 0)


def test_the_train_command_carries_every_setting_to_fit(tmp_path):
    """What a notebook's fit_in_processes passes to torchrun is exactly what fit gets (checked in one process)."""
    from medgan_core.batch import main
    from medgan_core.config import DataConfig, TrainConfig, to_dict
    from medgan_core.distributed import train_command
    from test_dataset_identity import write_dataset

    data = DataConfig(dataset=str(write_dataset(tmp_path / "set")), image_size=32, max_per_class=3,
                      cache_dir=str(tmp_path / "cache"), class_order=("notumor", "glioma"))
    train = TrainConfig(max_steps=1, batch_size=4, betas=(0.0, 0.9), loss_options={"gp_lambda": 5.0},
                        augment="diffaugment", progress=False, device="cpu")
    command = train_command("cwgan-gp", data, train, tmp_path / "run", {"g_features": 4, "d_features": 4})
    assert main(command) == 0
    meta = load_checkpoint(tmp_path / "run" / "checkpoints" / "step-00000001.safetensors").meta
    assert meta["train_config"] == to_dict(train) and meta["data_config"] == to_dict(data)
    assert meta["model_config"]["g_features"] == 4 and meta["data"]["class_names"] == ["notumor", "glioma"]


@pytest.mark.slow  # torchrun starts two processes
def test_a_notebook_starts_two_processes_and_gets_a_fit_result(tmp_path, monkeypatch):
    from medgan_core.config import DataConfig, TrainConfig
    from medgan_core.distributed import fit_in_processes
    from test_dataset_identity import write_dataset

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    data = DataConfig(dataset=str(write_dataset(tmp_path / "set")), image_size=32, cache_dir=str(tmp_path / "cache"))
    train = TrainConfig(max_steps=2, batch_size=4, progress=False, device="cpu", sample_every=100)
    result = fit_in_processes(2, "dcgan", data, train, tmp_path / "run", {"g_features": 4, "d_features": 4, "z_dim": 8})
    assert (result.step, result.stopped) == (2, "completed") and result.generator.info.model == "dcgan"
    assert result.history["step"].tolist() == [2] and result.checkpoint.name == "step-00000002.safetensors"
