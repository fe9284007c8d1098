"""taskgate's domain and services. Knows nothing of Lambda or Starlette."""
