from zipp_assets.llm.openai_compat import OpenAICompatibleLLM
from zipp_assets.llm.resources import LLMResource
from zipp_assets.llm.tokens import ApproximateTokenCounter, LocalTokenizerCounter, ServerTokenCounter, token_counter


def test_the_local_tokenizer_counts_as_the_model_does(tiny_llama_dir):
    counter = LocalTokenizerCounter(tiny_llama_dir)
    texts = ["film grain and reef tanks", "", "a " * 50]
    assert counter.count(texts) == [len(counter.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    assert not counter.approximate and counter.count([]) == []
    resource = LLMResource(backend="transformers", model_dir=str(tiny_llama_dir))
    assert isinstance(resource.token_counter(), LocalTokenizerCounter)
    managed = LLMResource(backend="vllm", model=str(tiny_llama_dir))  # a managed server's model folder: no server needed
    assert isinstance(managed.token_counter(), LocalTokenizerCounter)


def test_a_server_tokenize_endpoint_or_the_named_approximation(fake_server):
    resource = LLMResource(backend="vllm", base_url=fake_server.base_url, model="tiny")
    counter = resource.token_counter()
    assert isinstance(counter, ServerTokenCounter) and not counter.approximate
    assert counter.count(["one two three", "four"]) == [3, 1]  # the fake server counts words
    fake_server.stop()  # an endpoint without /tokenize (or gone) falls back, and says so
    fallback = token_counter("openai", model="x", client=OpenAICompatibleLLM(fake_server.base_url, "x", retries=0))
    assert isinstance(fallback, ApproximateTokenCounter) and fallback.approximate and "approximate" in fallback.name
    assert isinstance(LLMResource().token_counter(), ApproximateTokenCounter)
