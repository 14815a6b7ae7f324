"""The ``dashscope`` relay engine: serves a model by forwarding its tasks to an upstream DashScope-compatible
service and keeping the results in our own storage.

It is a DashScope client, so the upstream's wire lives here and nowhere else in the domain: ``client.py``
(bodies, answers, errors, the upload flow), ``engine.py`` (the :class:`~videosynth.engines.base.RelayEngine`),
``options.py`` (what a models file may say, read without building anything).
"""
