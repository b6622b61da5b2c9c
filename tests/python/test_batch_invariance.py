"""`batch_invariant` through the gateway, as the official OpenAI SDK sends it (`extra_body`): a
seeded chat completion gives the same text and the same log probabilities alone and while
other requests generate beside it on the same worker. Without it the same comparison differs,
so the test can fail. Real worker (eight slots), real model, real RabbitMQ."""

import threading

import pytest

from conftest import Names, metric, sdk, start_gateway, start_worker, wait_for

# Gemma 3's end-of-generation tokens (`<eos>`, `<end_of_turn>`, and `</s>`, which llama.cpp
# counts as one): a neighbour that cannot pick them runs to its max_tokens.
NO_END = {"1": -100, "106": -100, "212": -100}

SUBJECT = [{"role": "user", "content": "Invent a name for a rabbit and describe it in one sentence."}]


@pytest.fixture(scope="module")
def gateway():
    names = Names("batch-invariance")
    worker = start_worker(names, engine__slots=8)
    gateway = start_gateway(names)
    gateway.worker = worker
    yield gateway
    gateway.stop()
    worker.stop()
    names.delete()


def ask(client, batch_invariant):
    completion = client.chat.completions.create(
        model="m",
        messages=SUBJECT,
        max_tokens=24,
        temperature=0.7,
        seed=1234,
        logprobs=True,
        extra_body={"batch_invariant": batch_invariant},
    )
    choice = completion.choices[0]
    return choice.message.content, [entry.logprob for entry in choice.logprobs.content]


def beside_neighbours(client, worker, batch_invariant):
    """The subject's answer while seven long streamed requests generate beside it; every one
    of them must still be generating when the subject's answer comes. With all eight slots
    busy every batch has eight rows: a batched subject's rows take llama.cpp's tiled kernels,
    never the one-row kernel of its run alone. Once the subject is answered the neighbours'
    streams are closed (the gateway cancels their tasks), and the test waits for the worker's
    slots to free, so that the next request alone is alone."""
    generating = threading.Barrier(8)
    answered = threading.Event()
    ran_out = []

    def neighbour(n):
        stream = client.completions.create(
            model="m",
            prompt="Once upon a time, in a village by the sea, there lived a baker who " * (n + 1),
            max_tokens=160,
            temperature=0.9,
            seed=n,
            logit_bias=NO_END,
            stream=True,
        )
        waiting = True
        with stream:
            for chunk in stream:
                if answered.is_set():
                    return
                # The gateway's first event comes before a worker takes the request; text
                # comes once it generates.
                if waiting and chunk.choices and chunk.choices[0].text:
                    generating.wait(timeout=300)
                    waiting = False
        ran_out.append(n)

    threads = [threading.Thread(target=neighbour, args=(n,)) for n in range(7)]
    for thread in threads:
        thread.start()
    generating.wait(timeout=300)
    answer = ask(client, batch_invariant)
    answered.set()
    for thread in threads:
        thread.join(timeout=600)
    assert not ran_out, f"neighbours {ran_out} ended before the subject was answered"
    wait_for(lambda: metric(worker.metrics_url, "warren_slots_busy") == 0, "the slots freeing")
    return answer


def test_a_batch_invariant_request_does_not_depend_on_its_neighbours(gateway):
    client = sdk(gateway.base_url, timeout=600)
    alone = ask(client, True)
    assert len(alone[1]) == 24
    assert beside_neighbours(client, gateway.worker, True) == alone


def test_without_it_the_neighbours_show_in_the_log_probabilities(gateway):
    client = sdk(gateway.base_url, timeout=600)
    alone = ask(client, False)
    assert beside_neighbours(client, gateway.worker, False) != alone
