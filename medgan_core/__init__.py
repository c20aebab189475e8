"""medgan_core: synthetic brain MRI with GANs.

Datasets, registered GAN architectures, pure loss functions, one training loop,
safetensors checkpoints, sampling/export, plots, widgets and Hugging Face Hub I/O.
"""

__version__ = "0.1.0"

__all__ = ["load_generator"]


def __getattr__(name: str):
    """``medgan_core.load_generator`` without importing torch and the models at ``import medgan_core``."""
    if name == "load_generator":
        from .loading import load_generator

        return load_generator
    raise AttributeError(f"module 'medgan_core' has no attribute {name!r}")
