"""The KServe explainer: why the model priced a house as it did, feature by feature (exact TreeSHAP)."""
