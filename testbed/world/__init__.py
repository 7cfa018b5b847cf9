"""The synthetic world of the built-in testbed: renderer, novel concepts, scorer (host-free)."""
