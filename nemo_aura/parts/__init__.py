"""Helpers shared by the model, the recipe and the tests."""
