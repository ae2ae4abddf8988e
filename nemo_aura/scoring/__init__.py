"""Scoring of spoken QA: metrics, test items and the compared systems (the recipe's stage-6/7 drivers use them)."""
