"""One LLM interface (`LLM.generate(requests) -> results`) with several backends.

`types` (requests and results), `jsonio` (JSON out of model text, schema validation), `base` (the
protocol and the per-request failure rule), `stats` (token counts and throughput), and the backends:
`openai_compat` (vLLM and any OpenAI-compatible server), `vllm_server` (a server the pipeline starts
and stops itself), `transformers_backend` (a local model folder), `template` (offline rules).
`resources` is the Dagster resource that picks one. Nothing here knows what a persona is.
"""
