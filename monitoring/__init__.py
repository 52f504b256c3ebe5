"""Observability as code: the Grafana dashboards' generator, promtool tests of the alert rules, locust."""
