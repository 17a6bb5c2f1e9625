"""The live loop: intake, decide, explain, the model watch, the decision log, metrics and status."""
