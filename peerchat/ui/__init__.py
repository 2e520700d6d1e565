"""The terminal: the numbered menu and how the node's news is shown."""
