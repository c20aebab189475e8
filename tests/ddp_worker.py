"""Run by torchrun from tests/test_distributed.py: a tiny ProGAN (no gradient penalty: no random draws in its loss)
trained for argv[2] steps into argv[1], on however many processes torchrun started."""
import sys
from pathlib import Path

from medgan_core.train import fit
from train_worker import MODEL_CONFIG, tiny_image_set, tiny_train_config

DDP_TRAIN = {"lr_g": 1e-3, "lr_d": 1e-3, "betas": (0.0, 0.99), "loss_options": {"drift": 1e-3, "gp_lambda": 0.0}}

if __name__ == "__main__":
    fit("progan", tiny_image_set(), tiny_train_config(int(sys.argv[2]), 2, **DDP_TRAIN), Path(sys.argv[1]),
        model_config=MODEL_CONFIG["progan"])
