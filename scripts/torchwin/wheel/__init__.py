"""`torchwin wheel`: compile one release from source on Linux without conda, as the recipe would.

The same `recipes/pytorch/build_driver.py` the recipe runs, in the environment the engine gives
it (SRC_DIR, PREFIX, RECIPE_DIR, the recipe's TORCHWIN_* values from the render), with a host
prefix made from a CPython of the variant's version plus PyPI packages standing in for the conda
host requirements. Results: a wheel (the 2017 builds' install path) and a conda package of the
same files, each installed fresh and checked with the package test.

    host_prefix      the CPython and PyPI packages that stand in for the recipe's host environment
    toolchain        compiler wrappers (an era gcc, optionally from a Debian sysroot) with ccache
    run              the build folder, its resumable steps, progress, the driver call
    conda_package    the same files as a conda package (engine-built), installed by the real conda
    engine_pack      the engine packs listed files under a package identity (a generated recipe)
    repack           conda packages of this machine's CPython, PyPI wheels and pytorch-select
    command          the command line

Layer "build" (torchwin.LAYERS): may import recipes, doctor and channel, never ci or publish.
"""
