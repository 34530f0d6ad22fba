"""The core both packages stand on: errors, paths, the registry, atomic writes, dtype names,
the progress bar and the environment shim. It imports nothing from `evalsuite` or `di_star`;
each submodule is imported on its own (this file loads nothing)."""
