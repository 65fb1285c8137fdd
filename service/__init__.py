"""mmembed's HTTP service: FastAPI over the `model` Embedder and the `index` backend (local store or PostgreSQL).

Entry points: `service.app.create_app(settings)` and the `mmembed` command (`service.cli`).
"""
