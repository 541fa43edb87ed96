"""Build hooks for the optional accelerators; everything else is in pyproject.toml.

recorder/_chainfast.c speeds up ChainWriter.append_events and needs a C
compiler, Python's headers and OpenSSL's (libssl-dev). Without them the
build is skipped (optional=True) and recorder.chain uses its Python loop.

masking/_re2scan.cpp does the candidate scan of masking.engine's Masker._find
in C++ and needs a C++ compiler (g++) and the system RE2 library and headers
(libre2-dev). Without them the build is skipped and the engine uses its
Python loop over google-re2.
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
        ),
        Extension(
            "masking._re2scan",
            sources=["masking/_re2scan.cpp"],
            libraries=["re2"],
            language="c++",
            extra_compile_args=["-O2", "-std=c++17"],
            optional=True,
        ),
    ]
)
