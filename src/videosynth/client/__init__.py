"""The command-line client: ``videosynth submit``, ``videosynth tasks`` and ``videosynth webhooks``, over the
public DashScope wire (and this server's push extensions).

It talks to a server (this one or the hosted service) only through HTTP, as any other client does, and so
imports nothing of the server: only the standard library and httpx.
"""

from videosynth.client.dashscope import ClientError, DashScope, normalise_base_url

__all__ = ["ClientError", "DashScope", "normalise_base_url"]
