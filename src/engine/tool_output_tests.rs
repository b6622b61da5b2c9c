//! Reading a tool-using task's output: streamed pieces, the calls kept, and why it ended.

use serde_json::json;

use super::super::chat_template::ChatTemplate;
use super::*;

const GEMMA: &str = include_str!("../../config/templates/gemma.jinja");

/// The output reader of a `required` task of the shipped template (its prefix is the call's
/// opening, as [`super::super::tools::render`] gives it).
fn output(parallel: bool) -> ToolOutput {
    output_of(&["get_weather"], parallel)
}

/// The same, offering functions named `names`, each taking a city.
fn output_of(names: &[&str], parallel: bool) -> ToolOutput {
    let template = ChatTemplate::new(GEMMA, "<bos>", "<eos>", true).unwrap();
    let tools: Vec<_> = names
        .iter()
        .map(|name| {
            json!({"type": "function", "function": {"name": name,
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}})
        })
        .collect();
    let rendered = template
        .apply(
            &json!({"messages": [{"role": "user", "content": "Weather?"}],
                       "tools": tools, "tool_choice": "required"}),
        )
        .unwrap();
    ToolOutput::new(
        OutputParser::of(&rendered).unwrap(),
        "<tool_call>\n".to_owned(),
        parallel,
    )
    .delimited(vec!["<tool_call>\n".to_owned()], Vec::new())
}

/// The output reader of an `auto` task of the shipped template: text until a call begins.
fn output_of_auto() -> ToolOutput {
    let template = ChatTemplate::new(GEMMA, "<bos>", "<eos>", true).unwrap();
    let tool = json!({"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}});
    let rendered = template
        .apply(
            &json!({"messages": [{"role": "user", "content": "Weather?"}],
                       "tools": [tool], "tool_choice": "auto"}),
        )
        .unwrap();
    ToolOutput::new(OutputParser::of(&rendered).unwrap(), String::new(), true)
        .delimited(rendered.trigger_words.clone(), Vec::new())
}

const CALL: &str =
    "{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>";

/// What `output` streams while `text` grows a byte at a time, then what it reads at the end.
fn streamed(output: &mut ToolOutput, text: &str) -> (Vec<Delta>, ToolAnswer, Delta) {
    let deltas = (1..=text.len())
        .filter_map(|end| output.advance(&text[..end]))
        .collect();
    let (answer, last) = output.finish(text, FinishReason::Stop);
    (deltas, answer, last)
}

#[test]
fn streamed_pieces_rebuild_the_final_call() {
    let mut output = output(true);
    let (deltas, answer, last) = streamed(&mut output, CALL);
    assert!(deltas.iter().all(|d| d.text.is_empty()), "{deltas:?}");
    let mut pieces: Vec<_> = deltas.into_iter().flat_map(|d| d.tool_calls).collect();
    pieces.extend(last.tool_calls);
    assert_eq!(answer.finish_reason, FinishReason::ToolCalls);
    let [call] = answer.calls.as_slice() else {
        panic!("one call: {answer:?}");
    };
    assert_eq!(call.function.name, "get_weather");
    assert_eq!(call.function.arguments, "{\"city\": \"Paris\"}");
    // The first piece names the call; the pieces' arguments join to the final ones.
    assert_eq!(pieces[0].id.as_deref(), Some(call.id.as_str()));
    assert_eq!(pieces[0].function.name.as_deref(), Some("get_weather"));
    assert!(pieces[1..].iter().all(|p| p.id.is_none() && p.index == 0));
    let joined: String = pieces
        .iter()
        .map(|p| p.function.arguments.as_str())
        .collect();
    assert_eq!(joined, call.function.arguments);
}

#[test]
fn a_single_call_ends_generation_when_its_arguments_close() {
    let mut single = output(false);
    let mut parallel = output(true);
    let closed = "{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}";
    assert!(!single.ends_at("{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Par"));
    assert!(single.ends_at(closed));
    assert!(!parallel.ends_at(closed));
}

#[test]
fn without_parallel_calls_only_the_first_is_kept() {
    let mut output = output(false);
    let two = format!("{CALL}\n<tool_call>\n{CALL}");
    let (answer, _) = output.finish(&two, FinishReason::Stop);
    assert_eq!(answer.calls.len(), 1, "{answer:?}");
}

#[test]
fn a_call_cut_short_by_the_token_limit_says_length() {
    let mut output = output(true);
    let (answer, _) = output.finish(&CALL[..40], FinishReason::Length);
    assert_eq!(answer.finish_reason, FinishReason::Length);
}

/// A reader for a task whose answer format is the function `final_answer`.
fn answering(parallel: bool) -> ToolOutput {
    output_of(&["get_weather", "final_answer"], parallel).answering(Some("final_answer".into()))
}

const ANSWER: &str =
    "{\"name\": \"final_answer\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>";

#[test]
fn a_call_of_the_answer_function_streams_and_ends_as_the_answers_text() {
    let mut output = answering(true);
    let (deltas, answer, last) = streamed(&mut output, ANSWER);
    assert!(deltas.iter().all(|d| d.tool_calls.is_empty()), "{deltas:?}");
    assert!(last.tool_calls.is_empty(), "{last:?}");
    let streamed: String = deltas
        .iter()
        .chain([&last])
        .map(|d| d.text.as_str())
        .collect();
    assert_eq!(answer.content, "{\"city\": \"Paris\"}");
    assert_eq!(streamed, answer.content);
    assert!(answer.calls.is_empty(), "{answer:?}");
    assert_eq!(answer.finish_reason, FinishReason::Stop);
}

#[test]
fn an_answer_after_other_calls_is_dropped_and_ends_the_turn() {
    let mut output = answering(true);
    let both = format!("{CALL}\n<tool_call>\n{ANSWER}");
    let (answer, _) = output.finish(&both, FinishReason::Stop);
    let [call] = answer.calls.as_slice() else {
        panic!("one call: {answer:?}");
    };
    assert_eq!(call.function.name, "get_weather");
    assert_eq!(answer.content, "");
    assert_eq!(answer.finish_reason, FinishReason::ToolCalls);
    // It ends the turn as soon as its arguments begin; alone, once they close.
    let mut parallel = answering(true);
    let begun = format!("{CALL}\n<tool_call>\n{{\"name\": \"final_answer\", \"arguments\": {{\"c");
    assert!(!parallel.ends_at(CALL));
    assert!(parallel.ends_at(&begun));
    let alone = "{\"name\": \"final_answer\", \"arguments\": {\"city\": \"Rome\"}";
    assert!(!parallel.ends_at(&alone[..alone.len() - 1]));
    assert!(parallel.ends_at(alone));
    assert!(answering(false).ends_at(alone));
}

#[test]
fn without_an_answer_function_a_call_of_that_name_is_a_call() {
    let mut output = output_of(&["get_weather", "final_answer"], true);
    let (answer, _) = output.finish(ANSWER, FinishReason::Stop);
    assert_eq!(answer.calls.len(), 1, "{answer:?}");
    assert_eq!(answer.content, "");
}

#[test]
fn an_id_the_model_writes_is_the_calls_id() {
    // A ChatML template whose calls carry their id, as Mistral's do.
    let source = include_str!("../../tests/python/data/chatml-tools.jinja").replace(
        "{{ call.function.arguments | tojson }}{% endif %}}",
        "{{ call.function.arguments | tojson }}{% endif %}, \"id\": {{ call.id | tojson }}}",
    );
    let template = ChatTemplate::new(&source, "<bos>", "<eos>", true).unwrap();
    let tools = [
        json!({"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}),
    ];
    let rendered = template
        .apply(&json!({"messages": [{"role": "user", "content": "Weather?"}], "tools": tools}))
        .unwrap();
    let mut output = ToolOutput::new(OutputParser::of(&rendered).unwrap(), String::new(), true);
    let text = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}, \"id\": \"a1b2c3d4e\"}\n</tool_call>";
    let (answer, _) = output.finish(text, FinishReason::Stop);
    let [call] = answer.calls.as_slice() else {
        panic!("one call: {answer:?}");
    };
    assert_eq!(call.id, "a1b2c3d4e", "{answer:?}");

    // The same id twice: the second call gets one of warren's.
    let mut output = ToolOutput::new(OutputParser::of(&rendered).unwrap(), String::new(), true);
    let (answer, _) = output.finish(&format!("{text}\n{text}"), FinishReason::Stop);
    let [first, second] = answer.calls.as_slice() else {
        panic!("two calls: {answer:?}");
    };
    assert_eq!(first.id, "a1b2c3d4e");
    assert!(second.id.starts_with("call_"), "{answer:?}");
}

/// Appends `text` to `generated` a few bytes at a time, until it says the text is finished.
fn generate(generated: &mut super::super::generated_text::GeneratedText, text: &str) {
    for piece in text.as_bytes().chunks(3) {
        if generated.append(piece, None) {
            return;
        }
    }
}

#[test]
fn a_tasks_stop_string_does_not_cut_an_open_call() {
    use super::super::generated_text::GeneratedText;
    // `}` first closes the arguments' inner object: a stop there would leave the arguments
    // unclosed. The outer `}` comes after the arguments closed: a stop may end the text there.
    let mut text = GeneratedText::new(None, vec!["}".into()], Some(output(true)));
    generate(&mut text, CALL);
    let done = text.finish(FinishReason::Stop);
    assert_eq!(done.finish_reason, FinishReason::ToolCalls);
    let [call] = done.tool_calls.as_slice() else {
        panic!("one call: {:?}", done.tool_calls);
    };
    assert_eq!(call.function.arguments, "{\"city\": \"Paris\"}");

    // Between a call's opening and its name too (`auto`: the opening is in the output).
    let mut text = GeneratedText::new(None, vec!["\"".into()], Some(output_of_auto()));
    generate(&mut text, &format!("Sure. <tool_call>\n{CALL}"));
    let done = text.finish(FinishReason::Stop);
    assert_eq!(done.tool_calls.len(), 1, "{:?}", done.tool_calls);
    assert_eq!(
        done.tool_calls[0].function.arguments,
        "{\"city\": \"Paris\"}"
    );

    // Before any call, a stop string ends the text as in a task without tools.
    let mut text = GeneratedText::new(None, vec!["Bye".into()], Some(output_of_auto()));
    assert!(text.append(b"Hello. Bye", None));
    let done = text.finish(FinishReason::Stop);
    assert_eq!(done.text, "Hello. ");
    assert!(done.tool_calls.is_empty());
}

#[test]
fn the_templates_stop_strings_end_the_turn_inside_a_call_too() {
    use super::super::generated_text::GeneratedText;
    let output = output(true).delimited(Vec::new(), vec!["<end>".into()]);
    let mut text = GeneratedText::new(None, Vec::new(), Some(output));
    assert!(text.append(
        b"{\"name\": \"get_weather\", \"arguments\": {\"city\": \"<end>",
        None
    ));
}
