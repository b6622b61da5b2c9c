"""langchain-openai's `OpenAIEmbeddings` against the gateway and a worker that embeds
(engine.role = "embed"), as a retrieval pipeline would use it: documents and a query.

`check_embedding_ctx_length=False` sends the texts as they are: with it on, langchain first
counts tokens with tiktoken, whose encodings it downloads (no network here), and OpenAI's
tokenizer is not the model's anyway."""

import math

from langchain_openai import OpenAIEmbeddings

DOCUMENTS = [
    "Rabbits live in burrows called warrens.",
    "The invoice is due at the end of the month.",
]


def test_openai_embeddings_embeds_documents_and_a_query(embed_stack):
    embeddings = OpenAIEmbeddings(
        base_url=embed_stack.gateway.base_url,
        api_key="unused",
        model="m",
        check_embedding_ctx_length=False,
        max_retries=0,
    )
    vectors = embeddings.embed_documents(DOCUMENTS)
    assert len(vectors) == 2 and all(len(v) == 640 for v in vectors)
    for vector in vectors:
        assert abs(math.sqrt(sum(x * x for x in vector)) - 1.0) < 1e-4
    query = embeddings.embed_query(DOCUMENTS[0])
    assert max(abs(a - b) for a, b in zip(query, vectors[0])) < 1e-3
    assert max(abs(a - b) for a, b in zip(query, vectors[1])) > 1e-2
