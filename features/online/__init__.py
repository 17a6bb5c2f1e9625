"""The online engine: the feature graph bar by bar, with bounded state, for the live loop."""
