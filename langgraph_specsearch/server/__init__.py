"""`specsearch serve`, a Text-Generation-Inference-compatible server, in small modules.

The HTTP side (no torch):
- `schema`: TGI's request models (as strict as TGI's serde), its error shape (`TGIError`),
  body parsing and request validation;
- `limits`: token limits derived as TGI's launcher does, checks of the numeric options;
- `guards`: ASGI guards in front of the routes (API key, body-size limit, last-resort 500);
- `errors`: TGI's error shape for whatever FastAPI itself rejects;
- `responses`: the JSON of TGI's responses and stream events, built from rows;
- `generation`: admission (429), validation off the loop, waiting on the engine, streaming;
- `app`: `create_app`, the FastAPI app (wiring and routes).

The generation side (torch, transformers):
- `rows`: `Row`, one sequence a request asks for;
- `engine`: the continuous-batching engine (queue, admission and queue timeout, prefill and
  decode steps, per-request isolation, prompt log-probabilities);
- `kvbatch`: merging and shrinking the running batch's KV cache;
- `choice`: how a row's next token is chosen (penalties, temperature, seeded sampling);
- `static_batching`: one `model.generate` per batch for models the continuous path can't edit;
- `speculative`: draft-model speculative decoding of one row;
- `tiny`: a tiny random model for tests and demos.

`langgraph_specsearch.serve` is the command and re-exports `create_app`. Nothing is imported
here, so importing the package is cheap; `engine` and `app` import torch and transformers.
"""
