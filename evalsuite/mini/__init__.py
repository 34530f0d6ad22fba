"""The mini world (issue 11): a procedural captioned-image world with a known gold judge, so the
suite and the DI* trainer produce numbers that mean something on a CPU."""
