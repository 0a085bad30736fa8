"""`torchwin doctor`: can this host build a variant? Beside the pipeline, usable on its own.

`command` runs the checks for a target platform and CUDA version and prints the report; the
probes, each a small function returning a `Check`, are split by what they look at:
`host_probes` (`Check`, the `Host` a probe sees the machine through; Python, disk, git, build
tools, PATH), `windows_probes` (Visual Studio 2017, its MSVC toolset, the Windows SDK, long
paths, PATH length), `cuda_probes` (nvcc, cuDNN, NvToolsExt) and `linux_probes` (gcc, MKL).

May import: torchwin's base layer (errors, checkout) and the recipes layer only; the build step
calls doctor, never the reverse. See LAYERS in torchwin/__init__.py.
"""
