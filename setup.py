"""The one compiled piece: the frame ring's kernels in C (ringaudio/kernels/_ring.c).

Optional: without a C compiler the build goes on and the ring runs on its numba kernels.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "ringaudio.kernels._ring",
            ["ringaudio/kernels/_ring.c"],
            extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
            optional=True,
        )
    ]
)
