"""How NextBest's processes start: the HTTP API, the CLI, the multi-process server and the demo."""
