"""The OpenAI-style dialect: the Videos API (``/v1/videos``) over the same tasks, keys and storage as the
DashScope dialect; the only package that speaks its wire."""

from videosynth.api.openai.errors import render_exception
from videosynth.api.openai.openapi import document as openapi_document
from videosynth.api.openai.routes import PREFIX, VIDEOS_PATH, openai_routes

__all__ = ["PREFIX", "VIDEOS_PATH", "openai_routes", "openapi_document", "render_exception"]
