"""The minimax-h3 engine: reference-to-video with sound, diffusers' ``MiniMaxH3ModularPipeline`` (``ref2va``).

Only :mod:`~videosynth.engines.minimax_h3.engine` and :mod:`~videosynth.engines.minimax_h3.compat` import
torch, diffusers and transformers (the ``[gpu]`` extra): :mod:`~videosynth.engines.minimax_h3.options` and
:mod:`~videosynth.engines.minimax_h3.plan` (the request mapping) import neither, so the API can read the
options and the tests can check the mapping without them.
"""
