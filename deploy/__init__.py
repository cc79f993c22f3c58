"""Deployment assets written as code: the Grafana dashboard (`deploy.dashboards`), and the
generator (`python -m deploy`) that writes the committed JSON and the Helm chart's copies."""
