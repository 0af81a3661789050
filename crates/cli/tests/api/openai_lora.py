"""Drives a running `ingot api` serving LoRA adapters with the official openai client (see
tests/lora.rs).

Usage: python openai_lora.py BASE_URL BASE_MODEL ADAPTER_A ADAPTER_B
Every request is greedy; each of 12 concurrent requests (the base and two adapters, four
prompts each) must equal the same request sent alone.
"""

import sys
from concurrent.futures import ThreadPoolExecutor

import openai
from checks import check, report

BASE, MODEL, A, B = sys.argv[1:5]
client = openai.OpenAI(base_url=BASE + "/v1", api_key="unused", max_retries=0, timeout=300)
PROMPTS = ["Hello there", "What is a river?", "Count to five", "Name a colour"]
JOBS = [(model, prompt) for prompt in PROMPTS for model in (MODEL, A, B)]


def ask(model, prompt):
    r = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": prompt}], temperature=0, max_tokens=12
    )
    return r.model, r.choices[0].message.content


ALONE = {job: ask(*job) for job in JOBS}


@check
def models_lists_the_base_and_every_adapter():
    listed = [m.id for m in client.models.list().data]
    assert listed == [MODEL, A, B], listed
    card = client.models.retrieve(A)
    assert card.model_extra.get("parent") == MODEL, card


@check
def replies_name_the_model_asked_for():
    for (model, _), (echoed, _) in ALONE.items():
        assert echoed == model, (model, echoed)


@check
def the_adapters_change_the_replies():
    differ = [p for p in PROMPTS if len({ALONE[(m, p)][1] for m in (MODEL, A, B)}) == 3]
    assert differ, ALONE


@check
def twelve_concurrent_requests_each_equal_the_request_alone():
    with ThreadPoolExecutor(max_workers=len(JOBS)) as pool:
        together = dict(zip(JOBS, pool.map(lambda job: ask(*job), JOBS)))
    for job in JOBS:
        assert together[job] == ALONE[job], (job, together[job], ALONE[job])


@check
def an_unknown_model_name_gets_the_base_model():
    assert ask("no-such-model", PROMPTS[0]) == (MODEL, ALONE[(MODEL, PROMPTS[0])][1])


report()
