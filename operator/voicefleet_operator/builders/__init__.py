"""Pure functions that turn a VoiceService into the Kubernetes objects the operator applies."""
