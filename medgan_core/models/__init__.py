"""GAN architectures, one file each. Importing this package registers them all."""
from . import alpha_gan_gp, cdcgan, dcgan, progan, singan_seg, stylegan2, wgan_gp  # noqa: F401
