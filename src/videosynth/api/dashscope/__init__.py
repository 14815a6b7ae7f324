"""The DashScope dialect: HappyHorse's async video-synthesis API, the only package that speaks its wire."""

from videosynth.api.dashscope.errors import render_exception
from videosynth.api.dashscope.openapi import document as openapi_document
from videosynth.api.dashscope.routes import SUBMIT_PATH, dashscope_routes

__all__ = ["SUBMIT_PATH", "dashscope_routes", "openapi_document", "render_exception"]
