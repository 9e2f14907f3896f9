"""Local mode (`kubemill run`): scripts and flows on this machine, no cluster.

`scripts` runs one script the way a runner pod would; `flows` runs a flow through the same pure engine as the
operator, each step a local process, with `driver` calling `advance()` in a loop on a real (or, in tests, a
fake) clock; `cache` keeps `cache_ttl` results in files; `cli` is the command. The modules depend one way:
cli -> flows -> driver, scripts, cache; nothing here is imported by the operator.
"""
