"""The HTTP intake (ASGI): predict, the Open Inference Protocol v2, CDS Hooks, health,
metrics, status page and OpenAPI, every route behind one edge guard."""
