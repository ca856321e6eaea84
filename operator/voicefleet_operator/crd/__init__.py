"""The VoiceService API: pydantic models (the single source of truth) and the CRD made from them."""
