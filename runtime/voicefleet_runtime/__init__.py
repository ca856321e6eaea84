"""voicefleet's inference runtime: an OpenAI-compatible speech-to-text HTTP server."""
