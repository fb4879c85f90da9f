"""Start or join a Ray instance, route its logs and worker output, and the progress dashboards."""
