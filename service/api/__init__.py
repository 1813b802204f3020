"""HTTP routes, one module per resource; mounted under /api/v1 by `service.main`."""
