"""Speech engines: the one contract every backend (faster-whisper, PyTorch) fulfils."""
