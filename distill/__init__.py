"""Distilled-3DGS: teacher variants (noise, dropout), the student's roles, and the four-model pipeline."""
