"""`torchwin upstream-facts`: read upstream PyTorch's own files at each pinned release commit.

`tree` reads one commit of an upstream git repository and sorts its files; `facts` and `cuda`
extract the facts the recipe and its build driver depend on (build environment variables, CMake
floors, submodules; NvToolsExt, ninja and the CUDA architectures); `table` writes and checks the
per-release tables under recipes/pytorch/upstream/; `command` is the subcommand.

May import: torchwin's base layer (errors, checkout) only. See LAYERS in torchwin/__init__.py.
"""
