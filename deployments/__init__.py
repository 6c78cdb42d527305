"""Ray Serve deployments of the pipeline stages (the online service)."""
