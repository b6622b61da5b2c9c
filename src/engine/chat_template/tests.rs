use serde_json::json;

use super::*;

/// warren's template for the default model, as the engine loads it.
const GEMMA: &str = include_str!("../../../config/templates/gemma.jinja");

pub(super) fn gemma() -> ChatTemplate {
    ChatTemplate::new(GEMMA, "<bos>", "<eos>", true).expect("the shipped template parses")
}

pub(super) fn weather_tool() -> serde_json::Value {
    json!({"type": "function", "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"]}}})
}

/// The shipped template's rendering of `question` with the weather tool and `choice`.
pub(super) fn asked(question: &str, choice: &str) -> Rendered {
    gemma()
        .apply(&json!({"messages": [{"role": "user", "content": question}],
                       "tools": [weather_tool()], "tool_choice": choice}))
        .expect("the request renders")
}

#[test]
fn without_tools_it_renders_what_the_builtin_gemma_template_renders() {
    let rendered = gemma()
        .apply(&json!({"messages": [
            {"role": "system", "content": " Be brief. "},
            {"role": "user", "content": "Hi "},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "Capital of France?"}]}))
        .unwrap();
    // No BOS (the tokenizer adds it), system joined into the first user turn, trimmed.
    assert_eq!(
        rendered.prompt,
        "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n\
         <start_of_turn>model\nHello!<end_of_turn>\n\
         <start_of_turn>user\nCapital of France?<end_of_turn>\n\
         <start_of_turn>model\n"
    );
    assert!(rendered.grammar.is_empty());
    assert_eq!(rendered.generation_prompt, "<start_of_turn>model\n");
}

#[test]
fn llama_cpp_recognises_the_shipped_template_as_tool_capable() {
    let caps = gemma().caps().unwrap();
    assert_eq!(caps["supports_tool_calls"], json!(true), "{caps}");
    assert_eq!(caps["supports_tools"], json!(true), "{caps}");
}

#[test]
fn required_gives_a_grammar_that_applies_from_the_first_token() {
    let rendered = asked("Weather in Paris?", "required");
    assert!(!rendered.grammar.is_empty());
    assert!(!rendered.grammar_lazy);
    assert!(
        rendered.prompt.contains("\"name\": \"get_weather\""),
        "{}",
        rendered.prompt
    );
}

#[test]
fn auto_gives_a_lazy_grammar_woken_by_the_call_marker() {
    let rendered = asked("Weather in Paris?", "auto");
    assert!(!rendered.grammar.is_empty());
    assert!(rendered.grammar_lazy);
    assert!(
        rendered
            .trigger_patterns
            .iter()
            .any(|p| p.contains("tool_call")),
        "{:?}",
        rendered.trigger_patterns
    );
}

#[test]
fn none_gives_no_grammar() {
    let rendered = asked("Weather in Paris?", "none");
    assert!(rendered.grammar.is_empty());
}

#[test]
fn a_history_with_calls_and_results_renders_them() {
    let rendered = gemma()
        .apply(&json!({"messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}],
            "tools": [weather_tool()]}))
        .unwrap();
    let prompt = &rendered.prompt;
    assert!(
        prompt.contains(
            "<start_of_turn>model\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call><end_of_turn>\n"
        ),
        "{prompt}"
    );
    assert!(
        prompt.ends_with(
            "<start_of_turn>user\n<tool_response>\nsunny\n</tool_response><end_of_turn>\n<start_of_turn>model\n"
        ),
        "{prompt}"
    );
}

#[test]
fn a_broken_template_is_refused_with_llama_cpps_reason() {
    let error = ChatTemplate::new("{% for %}", "<bos>", "<eos>", true)
        .err()
        .expect("a broken template is refused");
    assert!(!error.is_empty());
}

#[test]
fn an_empty_template_is_refused_not_an_abort() {
    // llama.cpp would take the model's template, and without a model assert and abort.
    let error = ChatTemplate::new("", "<bos>", "<eos>", true)
        .err()
        .expect("an empty template is refused");
    assert!(error.contains("no chat template"), "{error}");
}

#[test]
fn needs_model_the_shipped_template_renders_as_llama_cpps_builtin_gemma_did() {
    use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate};
    let (_backend, model) = crate::engine::test_model::real_model();
    let builtin = LlamaChatTemplate::new("gemma").unwrap();
    let conversations = [
        vec![("user", "Hi")],
        vec![("system", "Be brief."), ("user", " Capital of France? ")],
        vec![
            ("system", "One. "),
            ("system", "Two."),
            ("user", "a"),
            ("assistant", " b "),
            ("user", "c"),
        ],
        vec![
            ("user", "a"),
            ("assistant", "b"),
            ("system", "late"),
            ("user", "c"),
        ],
    ];
    for conversation in conversations {
        let chat: Vec<_> = conversation
            .iter()
            .map(|(role, content)| LlamaChatMessage::new(role.to_string(), content.to_string()))
            .collect::<Result<_, _>>()
            .unwrap();
        let expected = model.apply_chat_template(&builtin, &chat, true).unwrap();
        let messages: Vec<_> = conversation
            .iter()
            .map(|(role, content)| json!({"role": role, "content": content}))
            .collect();
        let rendered = gemma().apply(&json!({"messages": messages})).unwrap();
        assert_eq!(rendered.prompt, expected, "{conversation:?}");
    }
}

#[test]
fn a_chatml_template_with_tools_is_recognised_too() {
    // The template tests/python/test_gguf_template.py writes into a GGUF.
    let source = include_str!("../../../tests/python/data/chatml-tools.jinja");
    let template = ChatTemplate::new(source, "<bos>", "<eos>", true).unwrap();
    let rendered = template
        .apply(
            &json!({"messages": [{"role": "system", "content": "Be brief."},
                                    {"role": "user", "content": "Weather in Paris?"}],
                       "tools": [weather_tool()], "tool_choice": "auto"}),
        )
        .unwrap();
    assert!(rendered.grammar_lazy && !rendered.grammar.is_empty());
    assert_eq!(rendered.trigger_words, ["<tool_call>\n"]);
    assert!(
        rendered
            .prompt
            .starts_with("<|im_start|>system\nBe brief.\n\n# Tools"),
        "{}",
        rendered.prompt
    );
    assert!(
        rendered
            .prompt
            .ends_with("<|im_start|>user\nWeather in Paris?<|im_end|>\n<|im_start|>assistant\n"),
        "{}",
        rendered.prompt
    );
}
