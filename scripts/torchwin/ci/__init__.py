"""The CI's own steps (`torchwin ci`, `torchwin nightly-version`), as commands anyone can run and read.

`command` is `torchwin ci`; `matrix` turns render output into the build matrix, `stages` orders
its compiled recipes and links each job to the jobs it needs; `nightly` the
nightly version and gate; `downloads` the pinned download table (its rules in
`downloads_check`) and the install plans made from it, `fetch` the checked download and unpacking
of one file; `anaconda_api` the read-only questions to anaconda.org (the last nightly's commit, the
builds a label already holds); `gha` hands values to later steps.

The top layer: may import any torchwin module except cli. See LAYERS in torchwin/__init__.py.
"""
