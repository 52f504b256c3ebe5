"""The transformer: checks named features, calls a predictor with one tensor (``python -m transformer``)."""
