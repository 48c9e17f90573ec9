"""A local server speaking Ollama's ``POST /api/embed`` (batch input, unit vectors)."""

from __future__ import annotations

from typing import Any

from tests.fake_providers._server import FakeServer, Fault, fake_vector


class FakeOllamaServer(FakeServer):
    """Serves the models in ``models`` (name -> dimensions); others are 404 like a real Ollama."""

    def __init__(self, models: dict[str, int] | None = None) -> None:
        super().__init__()
        self.models = models or {"nomic-embed-text": 768, "all-minilm": 384}

    def handle(
        self, path: str, headers: dict[str, str], body: Any, fault: Fault | None
    ) -> tuple[int, dict[str, str], Any]:
        if path != "/api/embed":
            return 404, {}, {"error": "404 page not found"}
        model = (body or {}).get("model", "")
        name = model.removesuffix(":latest")
        if name not in self.models:
            return 404, {}, {"error": f'model "{model}" not found, try pulling it first'}
        inputs = body.get("input", [])
        texts = [inputs] if isinstance(inputs, str) else list(inputs)
        size = self.models[name] - (1 if fault is not None and fault.wrong_dimensions else 0)
        return (
            200,
            {},
            {
                "model": model,
                "embeddings": [fake_vector(t, size) for t in texts],
                "total_duration": 1000,
                "load_duration": 10,
                "prompt_eval_count": sum(len(t.split()) for t in texts),
            },
        )
