"""Figures and the Markdown report, drawn from fit.json and the runs table."""
