"""Graph plumbing: tracing (with leaf rules and module scopes), model copies, node metadata, the fxq state kept on a
GraphModule, quantization modes and lazily generated code. Everything the passes share that is not a pass."""
