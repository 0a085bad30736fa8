"""`torchwin publish`: upload checked package files to anaconda.org and prune old builds there.

`command` is the subcommand; `anaconda` the client every call to anaconda.org goes through
(anaconda-client's API, with retries); `upload` decides and uploads files, `prune` applies the
retention rules there; `redact` keeps the token out of every message and log line.

May import: torchwin's base and recipes layers and the channel (its checks, config and
retention rule); never build or ci. See LAYERS in torchwin/__init__.py.
"""
