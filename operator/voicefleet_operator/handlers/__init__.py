"""kopf handlers for VoiceServices and their children; `register` wires them into a registry."""

from voicefleet_operator.handlers.context import OperatorContext
from voicefleet_operator.handlers.voiceservice import register

__all__ = ["OperatorContext", "register"]
