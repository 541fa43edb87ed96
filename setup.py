"""Build hook for the optional C accelerator; everything else is in pyproject.toml.

recorder/_chainfast.c speeds up ChainWriter.append_events and needs a C
compiler, Python's headers and OpenSSL's (libssl-dev). Without them the
build is skipped (optional=True) and recorder.chain uses its Python loop.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "recorder._chainfast",
            sources=["recorder/_chainfast.c"],
            libraries=["crypto"],
            extra_compile_args=["-O2"],
            optional=True,
        )
    ]
)
