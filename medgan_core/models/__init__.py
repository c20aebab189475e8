"""GAN architectures, one file each. Importing this package registers them all."""
from . import cdcgan, dcgan, progan, stylegan2, wgan_gp  # noqa: F401
