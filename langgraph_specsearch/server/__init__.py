"""`specsearch serve`, a Text-Generation-Inference-compatible server, in small modules.

- `schema`: TGI's request models, its error shape (`TGIError`) and request validation;
- `engine`: the continuous-batching engine (rows join and leave between decode steps;
  per-row sampling and stops; falls back to one `model.generate` per batch);
- `kvbatch`: merging and shrinking the running batch's KV cache;
- `app`: `create_app`, the FastAPI app (routes, auth, limits, streaming);
- `tiny`: a tiny random model for tests and demos.

`langgraph_specsearch.serve` is the command and re-exports `create_app`. Nothing is imported
here, so importing the package is cheap; `engine` and `app` import torch and transformers.
"""
