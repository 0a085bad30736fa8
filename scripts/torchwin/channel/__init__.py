"""The conda channel: the local one on disk (channel/local) and the rules it shares with anaconda.org.

`command` is `torchwin channel` and the API the build step calls (add_packages); `store` the
crash-safe layout and index, under `lock` (an OS file lock); `package_check` and `package_read` what a package file must be
before it goes in; `config`, `labels` and `retention` the channel's settings and rules; `page` and
`serve` what users see; `repodata` turns rendered variants into repodata for solver questions.

May import: torchwin's base layer (errors, checkout) and the recipes layer; never build, publish
or ci (they call the channel, not the other way round). See LAYERS in torchwin/__init__.py.
"""
