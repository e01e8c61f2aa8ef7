"""Diffusion: SAEs on the text encoder of a text-to-image model, steering, attribute discovery."""
