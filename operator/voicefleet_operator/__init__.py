"""voicefleet's Kubernetes operator: reconciles VoiceServices into GPU speech workloads."""
