"""HTTP routes, one module per resource; :mod:`serving.app` mounts them."""
