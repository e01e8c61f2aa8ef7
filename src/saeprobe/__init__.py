"""saeprobe: sparse autoencoders on vision models, from activations to the study's claims."""

__version__ = "0.1.0"
