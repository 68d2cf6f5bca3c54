"""The compiled pieces: the frame ring's kernels (ringaudio/kernels/_ring.c) and the two-stage
resampler's (ringaudio/kernels/_dsp.c), in C.

Optional: without a C compiler the build goes on, the ring runs on its numba kernels and the
resampler on its one-stage numba kernel.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "ringaudio.kernels._ring",
            ["ringaudio/kernels/_ring.c"],
            depends=["ringaudio/kernels/buffers.h"],
            extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
            optional=True,
        ),
        Extension(
            "ringaudio.kernels._dsp",
            ["ringaudio/kernels/_dsp.c"],
            depends=["ringaudio/kernels/buffers.h"],
            extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
            optional=True,
        ),
    ]
)
