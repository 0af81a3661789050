"""The tiny check harness the client scripts share: `@check` runs a function at once and
records its failure; `report()` prints one line per check and exits non-zero on any failure;
`command_line()` reads the scripts' arguments; `refused()` checks a request is turned down with a
given status and words in the error. Also the tool the scripts offer (`WEATHER`)."""

import json
import sys

results = []

# A function tool the scripts offer, in no API's wrapping.
WEATHER_FUNCTION = {
    "name": "get_weather",
    "description": "Get the current weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string", "description": "The city name"}},
        "required": ["city"],
    },
}
# The same tool as chat completions' `tools` take it.
WEATHER = {"type": "function", "function": WEATHER_FUNCTION}


def command_line():
    """BASE_URL and MODEL from the command line, and the greedy fixture's items by name."""
    base, model, fixture = sys.argv[1], sys.argv[2], sys.argv[3]
    return base, model, {item["name"]: item for item in json.load(open(fixture))["items"]}


def refused(call, status, *words):
    """`call()` raises the openai client's APIStatusError with `status`, and every one of `words`
    is in its message or body (the body holds the `param` the error names)."""
    import openai

    try:
        call()
    except openai.APIStatusError as e:
        assert e.status_code == status, (e.status_code, e.message)
        shown = e.message + " " + json.dumps(e.body)
        for w in words:
            assert w in shown, (w, shown)
        return
    raise AssertionError("accepted")


def check(fn):
    try:
        fn()
        results.append((fn.__name__, None))
    except Exception as e:  # every failure is reported, then the script fails
        results.append((fn.__name__, e))
    return fn


def report():
    failed = [(name, e) for name, e in results if e is not None]
    for name, e in results:
        print(("FAIL " if e else "ok   ") + name + (f": {type(e).__name__}: {e}" if e else ""))
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    sys.exit(1 if failed else 0)
