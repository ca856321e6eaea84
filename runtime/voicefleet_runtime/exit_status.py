"""`voicefleet serve`'s exit statuses, whether one process serves or several."""

EXIT_OK = 0
EXIT_LOAD_FAILED = 1
"""The model did not load, or the server could not listen."""
EXIT_DRAIN_TIMEOUT = 2
"""The grace period ended with requests unfinished."""
EXIT_BAD_SETTINGS = 3
EXIT_API_PROCESS_LOST = 4
"""One of several API processes ended unasked (api_processes.py); the rest were stopped."""
