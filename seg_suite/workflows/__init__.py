"""Workflows: a published method run end to end from a recipe file (recipes, stages, resume)."""
