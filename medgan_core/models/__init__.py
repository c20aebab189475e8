"""GAN architectures, one file each. Importing this package registers them all."""
from . import cdcgan, dcgan  # noqa: F401
