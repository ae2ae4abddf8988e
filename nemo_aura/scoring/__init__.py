"""Scoring of spoken QA: metrics, the compared systems, and the side-by-side benchmark (recipe stage 6)."""
