"""The wan-vace engine: reference-to-video with diffusers ``WanVACEPipeline`` (Wan2.1-VACE, Wan2.2-VACE-Fun).

This package is the only one that imports torch and diffusers (the ``[gpu]`` extra), and only in
:mod:`videosynth.engines.wan_vace.engine`: :mod:`~videosynth.engines.wan_vace.options` and
:mod:`~videosynth.engines.wan_vace.plan` (the request mapping) import neither, so the API can read the
options and the tests can check the mapping without them.
"""
