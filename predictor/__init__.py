"""The predictor: the trained pipeline behind KServe's V1 and V2 protocols (``python -m predictor``)."""
