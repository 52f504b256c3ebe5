"""The container images, built here from docker/*.Dockerfile (``./dev images``; docs/images.md)."""
