"""The batch engine: every feature of a spec as numpy columns over the whole panel."""
