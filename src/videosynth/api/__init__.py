"""HTTP only: the DashScope wire. Never imports the worker, engines or torch."""
