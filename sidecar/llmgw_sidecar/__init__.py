"""llmgateway sidecar: an OpenAI-compatible caching, limiting and accounting proxy on 127.0.0.1."""

__version__ = "0.1.0"
