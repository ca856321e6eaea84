"""Text-to-speech: Kokoro-82M (int8 ONNX) behind OpenAI's speech API."""
