"""Evaluation harness: run strategies over datasets, grade, resume, summarize and plot."""
