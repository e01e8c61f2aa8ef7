"""Evaluations of SAEs: one module per task of the study."""
