"""Tool calls held to their tools' schemas while decoding (studio/llm/tools.py), on the tiny model:
sampled calls always parse and validate, free replies in the same batch are untouched, a schema no
call can satisfy fails its reply alone; calls read back the same whole or streamed; the tools shown
in the Hermes format where the template has none, by the template where it has. No Django needed."""

import json
import re
from concurrent.futures import Future

import jsonschema
import pytest

from studio.llm import GenerationSettings, load_model
from studio.llm.constraints import FORMAT_FAILED, FormatError, ReplyConstraint
from studio.llm.engine import BatchEngine, EngineRequest, prepare_prompt
from studio.llm.remote import _CallsAsText
from studio.llm.replies import fit_to_context, render_prompt_ids
from studio.llm.tools import (
    CallReader,
    ToolError,
    assistant_text,
    call_grammar,
    clean_tool_use,
    read_reply,
    responses_text,
    structured_messages,
    template_takes_tools,
)
from tests.settings import TEST_CACHE, TINY_MODEL_DIR

WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 16},
        "unit": {"enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
ADD = {
    "type": "object",
    "properties": {"a": {"type": "integer", "maximum": 999}, "b": {"type": "integer", "maximum": 999}},
    "required": ["a", "b"],
    "additionalProperties": False,
}
SCHEMAS = {"get_weather": WEATHER, "add": ADD}
TOOLS = [
    {
        "type": "function",
        "function": {"name": "get_weather", "description": "The weather in a city", "parameters": WEATHER},
    },
    {"type": "function", "function": {"name": "add", "parameters": ADD}},
]


def tool_use(choice="required", *, parallel=False, tools=TOOLS):
    return clean_tool_use(tools, choice, parallel)


@pytest.fixture(scope="module")
def engine():
    loaded = load_model(str(TINY_MODEL_DIR), cache_dir=TEST_CACHE / "models", dtype="float32")
    engine = BatchEngine(loaded, max_batch=8)
    yield engine
    engine.close()


def replies(engine, requests):
    """[(prompt, settings, tools)] submitted together; their results in order."""
    futures = []
    for key, (prompt, settings, tools) in enumerate(requests):
        future = Future()
        engine.submit(
            EngineRequest(
                key=(id(futures), key),
                messages=[{"role": "user", "content": prompt}],
                settings=settings,
                tools=tools,
                on_delta=lambda delta: None,
                on_done=future.set_result,
            )
        )
        futures.append(future)
    return [future.result(300) for future in futures]


def valid_calls(text: str) -> list[tuple[str, dict]]:
    """The reply's calls, each checked against its tool's schema."""
    _, calls = read_reply(text)
    checked = []
    for call in calls:
        name, arguments = call["function"]["name"], json.loads(call["function"]["arguments"])
        jsonschema.validate(arguments, SCHEMAS[name])
        checked.append((name, arguments))
    return checked


def test_fifty_sampled_calls_with_required_all_parse_and_validate(engine):
    results = replies(
        engine,
        [(f"Help {n}", GenerationSettings(max_new_tokens=120, temperature=1.0, seed=n), tool_use()) for n in range(50)],
    )
    for result in results:
        assert result.finish_reason == "stop", result
        assert result.text.startswith("<tool_call>\n") and result.text.endswith("\n</tool_call>")
        assert len(valid_calls(result.text)) == 1
    assert {name for result in results for name, _ in valid_calls(result.text)} == {"get_weather", "add"}
    assert len({result.text for result in results}) > 10  # sampled, not one call repeated


def test_a_call_near_its_token_limit_closes_instead_of_being_cut(engine):
    """A string with no maxLength may run on at temperature 1 (a small model's does, for hundreds of
    tokens); in its last tokens (closing_window) the reply prefers the tokens that close, so every
    reply ends a whole, valid call: none is cut at the limit."""
    notes = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}
    tools = [{"type": "function", "function": {"name": "note", "parameters": notes}}]
    results = replies(
        engine,
        [
            (f"Write {n}", GenerationSettings(max_new_tokens=48, temperature=1.0, seed=n), tool_use(tools=tools))
            for n in range(20)
        ],
    )
    for result in results:
        assert result.finish_reason == "stop", result
        _, [call] = read_reply(result.text)
        jsonschema.validate(json.loads(call["function"]["arguments"]), notes)
    assert any(result.usage.completion_tokens > 40 for result in results)  # some ran into the window, closed


def test_a_named_tool_is_the_one_called(engine):
    named = clean_tool_use(TOOLS, {"type": "function", "function": {"name": "add"}}, False)
    results = replies(
        engine, [(f"n{n}", GenerationSettings(max_new_tokens=80, temperature=1.0, seed=n), named) for n in range(6)]
    )
    assert all([name for name, _ in valid_calls(result.text)] == ["add"] for result in results)


def test_parallel_calls_may_come_several_in_a_reply_each_valid(engine):
    results = replies(
        engine,
        [
            (f"p{n}", GenerationSettings(max_new_tokens=160, temperature=1.0, seed=n), tool_use(parallel=True))
            for n in range(8)
        ],
    )
    counts = [len(valid_calls(result.text)) for result in results if result.finish_reason == "stop"]
    assert counts and min(counts) >= 1
    # The grammar takes a second call only where parallel calls are allowed.
    two = (
        '<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n</tool_call>\n'
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo", "unit": "celsius"}}\n</tool_call>'
    )
    assert _takes(engine, tool_use(parallel=True), two) and not _takes(engine, tool_use(parallel=False), two)
    assert [name for name, _ in valid_calls(two)] == ["add", "get_weather"]


def _takes(engine, tools, text: str) -> bool:
    """Whether the reply's grammar takes `text` whole."""
    constraint = ReplyConstraint(engine.loaded.tokenizer, grammar=call_grammar(tools), subject="The tools' schemas")
    try:
        constraint.advance_through(text)
    except FormatError:
        return False
    return constraint.matcher.is_accepting()


def test_auto_gives_text_or_a_valid_call_and_a_call_once_begun_is_held(engine):
    results = replies(
        engine,
        [(f"a{n}", GenerationSettings(max_new_tokens=40, temperature=1.0, seed=n), tool_use("auto")) for n in range(4)],
    )
    for result in results:
        assert result.finish_reason in ("stop", "length")
        content, calls = read_reply(result.text)
        assert calls == [] or valid_calls(result.text)
    auto = tool_use("auto")
    assert _takes(engine, auto, "Any text at all, even { and <tool but never the tag")
    assert _takes(
        engine, auto, 'Let me see.\n<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n</tool_call>'
    )
    assert not _takes(engine, auto, 'Let me see.<tool_call>\n{"name": "mul", "arguments": {}}\n</tool_call>')
    assert not _takes(engine, auto, '<tool_call>\n{"name": "add", "arguments": {"a": "one", "b": 2}}\n</tool_call>')
    # `none`: the tools are shown, nothing is held.
    assert call_grammar(tool_use("none")) is None


def test_free_replies_in_a_batch_with_tool_calls_are_what_they_are_alone(engine):
    greedy = GenerationSettings(max_new_tokens=24, temperature=0)
    prompts = ["Tell me about the sea", "Write a poem", "Count to ten"]
    alone = [replies(engine, [(prompt, greedy, None)])[0].text for prompt in prompts]
    mixed = replies(
        engine,
        [
            (prompts[0], greedy, None),
            ("weather?", GenerationSettings(max_new_tokens=80, temperature=0), tool_use()),
            (prompts[1], greedy, None),
            ("sum?", GenerationSettings(max_new_tokens=80, temperature=1.0, seed=3), tool_use(parallel=True)),
            (prompts[2], greedy, None),
        ],
    )
    assert [mixed[0].text, mixed[2].text, mixed[4].text] == alone
    assert valid_calls(mixed[1].text) and valid_calls(mixed[3].text)


def test_a_schema_no_call_can_satisfy_fails_its_reply_alone_with_the_tools_name(engine):
    impossible = clean_tool_use(
        [
            {
                "type": "function",
                "function": {
                    "name": "pick",
                    "parameters": {
                        "type": "object",
                        "properties": {"n": {"type": "integer", "minimum": 5, "maximum": 2}},
                        "required": ["n"],
                    },
                },
            }
        ],
        "required",
    )
    greedy = GenerationSettings(max_new_tokens=12, temperature=0)
    with pytest.raises(FormatError, match="No call to `pick` can be written: its parameters cannot be satisfied"):
        replies(engine, [("x", greedy, impossible)])  # the worker fails that reply with this sentence
    # While decoding, a reply whose calls allow no token fails alone, with its code; the batch goes on.
    stuck, free = Future(), Future()
    request = EngineRequest(
        key="stuck",
        messages=[{"role": "user", "content": "x"}],
        settings=greedy,
        tools=tool_use(),
        on_delta=lambda delta: None,
        on_done=stuck.set_result,
    )
    prepare_prompt(engine.loaded, request)
    request.constraint.llt = _MaskEmptiedAfter(request.constraint.llt, steps=3)
    engine.submit(request)
    engine.submit(
        EngineRequest(
            key="free",
            messages=[{"role": "user", "content": "y"}],
            settings=greedy,
            on_delta=lambda delta: None,
            on_done=free.set_result,
        )
    )
    failed, free = stuck.result(300), free.result(300)
    assert failed.finish_reason == "error" and failed.error_code == FORMAT_FAILED
    assert failed.error.startswith("The tools' schemas allow no token at this point")
    assert free.finish_reason == "length" and free.usage.completion_tokens == 12


class _MaskEmptiedAfter:
    """llguidance's torch helpers, with the mask emptied after `steps` steps: what a schema that
    turns out unsatisfiable midway gives."""

    def __init__(self, llt, *, steps: int):
        self.llt, self.steps = llt, steps

    def fill_next_token_bitmask(self, matcher, bitmask, index):
        self.llt.fill_next_token_bitmask(matcher, bitmask, index)
        self.steps -= 1
        if self.steps < 0:
            bitmask.zero_()

    def __getattr__(self, name):
        return getattr(self.llt, name)


@pytest.mark.parametrize(
    "text",
    [
        "Just words, no call.  \n",
        'Let me look.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo", "unit": "celsius"}}\n</tool_call>',
        '<tool_call>\n{"name": "a", "arguments": {"s": "}</tool_call>", "n": {"m": [1, {"k": 2}]}}}\n</tool_call>\n'
        '<tool_call>\n{"name": "b", "arguments": {}}\n</tool_call>',
        '<tool_call>{"name":"x","arguments":{"q":1}}</tool_call>',  # another engine's layout: whole, once closed
        "A tag <tool_call> that is no call </tool_call> stays text",
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Os',  # cut at the reply's length
    ],
)
def test_a_streamed_reply_gives_the_calls_the_whole_reply_gives(text):
    content, calls = read_reply(text)
    for size in (1, 2, 3, 7, 50):
        reader = CallReader()
        events = []
        for start in range(0, len(text), size):
            events += reader.feed(text[start : start + size])
        events += reader.end()
        assert "".join(event[1] for event in events if event[0] == "content") == content
        names = [event[3] for event in events if event[0] == "call"]
        arguments = ["".join(e[2] for e in events if e[0] == "arguments" and e[1] == n) for n in range(len(names))]
        assert names == [call["function"]["name"] for call in calls]
        assert arguments == [call["function"]["arguments"] for call in calls]
        # The head comes first, then the arguments in pieces.
        assert all(
            events.index(e) > min(i for i, f in enumerate(events) if f[0] == "call" and f[1] == e[1])
            for e in events
            if e[0] == "arguments"
        )


def test_calls_read_back_in_openais_shape():
    content, calls = read_reply(
        'Checking.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo", "unit": "celsius"}}\n</tool_call>'
    )
    assert content == "Checking."
    assert calls[0]["type"] == "function" and calls[0]["id"].startswith("call_") and len(calls[0]["id"]) == 29
    assert calls[0]["function"] == {"name": "get_weather", "arguments": '{"city": "Oslo", "unit": "celsius"}'}
    assert read_reply("no calls") == ("no calls", [])


def test_the_hermes_format_shows_tools_calls_and_results_to_a_template_without_tools(engine):
    assert not template_takes_tools(engine.loaded.tokenizer.chat_template)
    history = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": assistant_text("", [("get_weather", {"city": "Oslo", "unit": "celsius"})])},
        {"role": "user", "content": responses_text(['{"temperature": 4}'])},
    ]
    prompt = engine.loaded.tokenizer.decode(render_prompt_ids(engine.loaded, history, tool_use=tool_use("auto")))
    assert prompt.startswith("<|im_start|>system\nBe brief.\n\n# Tools\n")
    assert "<tools>\n" + json.dumps(TOOLS[0]) + "\n" + json.dumps(TOOLS[1]) + "\n</tools>" in prompt
    assert (
        '<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo", "unit": "celsius"}}'
        "\n</tool_call><|im_end|>\n<|im_start|>user\n<tool_response>\n"
        '{"temperature": 4}\n</tool_response><|im_end|>\n<|im_start|>assistant\n'
    ) in prompt
    # Fitted to the context, the tools count: they are text of the system turn.
    _, ids = fit_to_context(engine.loaded, history, 16, tool_use=tool_use("auto"))
    assert ids == render_prompt_ids(engine.loaded, history, tool_use=tool_use("auto"))


def test_the_web_process_counts_the_tokens_the_worker_renders_with_tools(engine):
    from studio.llm.counting import load_prompt_counter

    counter = load_prompt_counter(str(TINY_MODEL_DIR), cache_dir=TEST_CACHE / "models")
    history = [
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": assistant_text("", [("get_weather", {"city": "Oslo", "unit": "celsius"})])},
        {"role": "user", "content": responses_text(["4"])},
    ]
    assert not counter.takes_tools
    assert counter.count(history, tool_use=tool_use()) == len(
        render_prompt_ids(engine.loaded, history, tool_use=tool_use())
    )
    assert counter.count(history, tool_use=tool_use()) > counter.count(history) + 100  # the tools are read


def test_a_template_that_takes_tools_renders_them_and_the_calls_its_way(engine):
    import copy

    tokenizer = copy.deepcopy(engine.loaded.tokenizer)
    tokenizer.chat_template = (
        "{% if tools %}TOOLS {% for t in tools %}{{ t.function.name }};{% endfor %}\n{% endif %}"
        "{% for m in messages %}{{ m.role }}: {{ m.content }}"
        "{% for c in m.tool_calls or [] %}[{{ c.id }} {{ c.function.name }} {{ c.function.arguments | tojson }}]{% endfor %}"
        "{% if m.tool_call_id %} ({{ m.tool_call_id }}){% endif %}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant:{% endif %}"
    )
    assert template_takes_tools(tokenizer.chat_template)
    loaded = type(engine.loaded)(**{**engine.loaded.__dict__, "tokenizer": tokenizer})
    history = [
        {"role": "user", "content": "Sum?"},
        {"role": "assistant", "content": assistant_text("Sure.", [("add", {"a": 1, "b": 2})])},
        {"role": "user", "content": responses_text(["3"])},
    ]
    prompt = tokenizer.decode(render_prompt_ids(loaded, history, tool_use=tool_use("auto")))
    assert prompt == (
        # (transformers renders with trim_blocks: the newline after a block tag goes)
        'TOOLS get_weather;add;user: Sum?assistant: Sure.[call_1 add {"a": 1, "b": 2}]tool: 3 (call_1)assistant:'
    )


def test_stored_turns_become_openais_structured_messages_for_an_external_engine():
    history = [
        {"role": "user", "content": "Weather in Oslo and Rome?"},
        {
            "role": "assistant",
            "content": assistant_text("", [("get_weather", {"city": "Oslo"}), ("get_weather", {"city": "Rome"})]),
        },
        {"role": "user", "content": responses_text(["4", "19"])},
        {"role": "user", "content": "Thanks"},
    ]
    structured = structured_messages(history, arguments_as="text")
    assert structured[1]["tool_calls"][1] == {
        "id": "call_2",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'},
    }
    assert [(m["role"], m.get("tool_call_id"), m["content"]) for m in structured[2:]] == [
        ("tool", "call_1", "4"),
        ("tool", "call_2", "19"),
        ("user", None, "Thanks"),
    ]


def test_an_external_engines_streamed_calls_become_the_text_form():
    calls = _CallsAsText()
    pieces = [
        calls.take({"index": 0, "id": "x", "function": {"name": "get_weather", "arguments": ""}}, after_text=True),
        calls.take({"index": 0, "function": {"arguments": '{"city": '}}, after_text=True),
        calls.take({"index": 0, "function": {"arguments": '"Oslo"}'}}, after_text=True),
        calls.take({"index": 1, "id": "y", "function": {"name": "add", "arguments": ""}}, after_text=True),
        calls.close(),
    ]
    text = "Sure." + "".join(pieces)
    content, read = read_reply(text)
    assert content == "Sure."
    assert [(c["function"]["name"], c["function"]["arguments"]) for c in read] == [
        ("get_weather", '{"city": "Oslo"}'),
        ("add", "{}"),
    ]


@pytest.mark.parametrize(
    "tools, choice, parallel, param, message",
    [
        (
            [{"type": "function", "function": {"name": f"t{n}"}} for n in range(1000)],
            None,
            None,
            "tools",
            "1,000 tools; at most 128",
        ),
        (
            [{"type": "function", "function": {"name": f"t{n}", "description": "x" * 9000}} for n in range(120)],
            None,
            None,
            "tools",
            "KB of JSON; at most 256 KB",
        ),
        ([{"type": "function", "function": {"name": "get weather"}}], None, None, "tools", "tools[0].function.name"),
        (
            [{"type": "function", "function": {"name": "f"}}, {"type": "function", "function": {"name": "f"}}],
            None,
            None,
            "tools",
            "declared twice",
        ),
        (
            [{"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}],
            None,
            None,
            "tools",
            "tools[0].function.parameters",
        ),
        ([{"type": "retrieval"}], None, None, "tools", "tools[0]"),
        (
            [{"type": "function", "function": {"name": "f"}}],
            {"type": "function", "function": {"name": "g"}},
            None,
            "tool_choice",
            "`g`, which is not one of the tools (f)",
        ),
        ([{"type": "function", "function": {"name": "f"}}], {"type": "function"}, None, "tool_choice", "must be"),
        ([{"type": "function", "function": {"name": "f"}}], "always", None, "tool_choice", "must be"),
        ([{"type": "function", "function": {"name": "f"}}], None, "yes", "parallel_tool_calls", "true or false"),
        (None, "required", None, "tool_choice", "declares no `tools`"),
    ],
)
def test_tools_are_bounded_and_checked_before_anything_is_rendered(tools, choice, parallel, param, message):
    with pytest.raises(ToolError, match=re.escape(message)) as refused:
        clean_tool_use(tools, choice, parallel)
    assert refused.value.param == param


def test_a_strict_tool_takes_no_argument_beyond_its_properties_wherever_it_is_declared():
    """OpenAI's strict mode closes every object of the parameters, for an API request's tools and a
    prompt version's alike (both go through clean_tool_use)."""
    parameters = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "where": {"type": "object", "properties": {"x": {}}}},
    }
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": parameters, "strict": True}}
    [strict] = clean_tool_use([tool], "required")["tools"]
    assert strict["parameters"]["additionalProperties"] is False
    assert strict["parameters"]["properties"]["where"]["additionalProperties"] is False
    loose = {"type": "function", "function": {"name": "get_weather", "parameters": parameters}}
    assert "additionalProperties" not in clean_tool_use([loose], "required")["tools"][0]["parameters"]
