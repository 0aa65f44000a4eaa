"""llmgateway operator: reconciles LLMGateway resources and injects the sidecar."""

__version__ = "0.1.0"
