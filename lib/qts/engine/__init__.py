"""The trading loop and the long-running runner around it."""
