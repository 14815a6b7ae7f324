"""videosynth: a self-hostable, DashScope-compatible reference-to-video server."""

__version__ = "0.1.0"
