"""Bit-exact OpenCV: the same pixels on every machine and under any thread timing.

OpenCV routes some kernels (``warpAffine``, ``resize`` with ``INTER_CUBIC``, ...) to Intel IPP, whose
results depend on the CPU it dispatches to (measured: the same animatic rendered with IPP's SSE4.2 path,
its AVX2 path and with IPP off gave three different sets of frames) and, for its tiled warps, on how
OpenCV's thread pool splits the picture, which changes with timing whenever a second thread is inside
OpenCV at the same moment (OpenCV then runs the nested call on one thread). OpenCV's own 8-bit kernels
give the same pixels for any thread count and timing, so pixel code calls :func:`exact_kernels` first.

Not covered: OpenCV 5's own float warps and ``addWeighted`` still differ by a code value between SIMD
levels (measured with ``OPENCV_CPU_DISABLE=AVX2``), so a machine without AVX2 renders slightly other pixels.

The switch is thread-local in OpenCV (``cv::ipp::setUseIPP`` writes the calling thread's state), which is
why every entry point calls it rather than the process setting it once: the renderer runs on helper and
producer threads that the caller never sees. It costs about 0.15 us a call.
"""

from __future__ import annotations

import cv2


def exact_kernels() -> None:
    """Make OpenCV calls from the current thread use OpenCV's own kernels, never IPP's."""
    cv2.ipp.setUseIPP(False)
