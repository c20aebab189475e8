"""medgan_core: synthetic brain MRI with GANs.

Datasets, registered GAN architectures, pure loss functions, one training loop,
safetensors checkpoints, sampling/export, plots, widgets and Hugging Face Hub I/O.
"""

__version__ = "0.1.0"
