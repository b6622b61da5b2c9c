//! Tool calling in the engine, before generation: a task's tools, its choice and the
//! conversation go to the chat template ([`chat_request`]), which gives the prompt, the
//! tool-call grammar ([`ToolGrammar`]: applied from the first token for `required` or a named
//! function, lazily from a trigger for `auto`) and the parser of the output, which
//! [`ToolOutput`] reads with. What is rendered and how is llama.cpp's; what this module owns
//! is how a task's choice is put to the template, where a required call starts, and the
//! answer function ([`answer_tool`]) a task's answer format becomes beside its tools.
use llama_cpp_2::token::LlamaToken;
use serde_json::{json, Value};

use super::chat_template::{ChatTemplate, OutputParser};
use super::tool_output::ToolOutput;
use crate::protocol::{
    ChatMessage, FunctionDef, FunctionKind, OutputConstraint, Task, TaskError, Tool, ToolChoice,
};

/// The answer function's name, unless one of the task's tools has it.
const ANSWER_TOOL: &str = "final_answer";

/// The tool-call grammar a task's rendering gave, ready for a grammar sampler.
#[derive(Debug, Clone)]
pub(super) struct ToolGrammar {
    /// GBNF.
    pub grammar: String,
    /// Applies only once a trigger appears (`auto`).
    pub lazy: bool,
    /// Regular expressions that trigger a lazy grammar.
    pub patterns: Vec<String>,
    /// Tokens that trigger a lazy grammar.
    pub trigger_tokens: Vec<LlamaToken>,
    /// Tokens the grammar must accept before the first generated one: the generation prompt
    /// the template already put at the end of the prompt, which llama.cpp's tool grammars
    /// begin with (and the start of a required call).
    pub prefill: Vec<LlamaToken>,
    /// Their text, from which llama.cpp's rule drops a leading space token a tokenizer adds.
    pub prefill_text: String,
}

/// The function a task's answer format becomes when the model may also call the task's own
/// tools (`auto`): llama.cpp's grammar constrains a turn to a call or to a format, not to a
/// choice of both, so the answer is offered as one more function and the turn must call
/// one; [`ToolOutput`] turns a call of it back into the answer's text. Its name is
/// `final_answer`, or with a number after it when a tool of the task's has that name.
pub(super) fn answer_tool(task: &Task) -> Option<Tool> {
    let Some(OutputConstraint::JsonSchema(schema)) = &task.constraint else {
        return None;
    };
    if task.tool_choice != ToolChoice::Auto {
        return None;
    }
    let taken = |name: &str| task.tools.iter().any(|t| t.function.name == name);
    let name = std::iter::once(ANSWER_TOOL.to_owned())
        .chain((2..).map(|n| format!("{ANSWER_TOOL}_{n}")))
        .find(|name| !taken(name))?;
    Some(Tool {
        kind: FunctionKind::Function,
        function: FunctionDef {
            name,
            description: Some(
                "Give the final answer to the user: call this when no other function is \
                 needed. Its arguments are the answer."
                    .to_owned(),
            ),
            parameters: Some(schema.clone()),
            strict: None,
        },
    })
}

/// The request the chat template renders for `task`: OpenAI's messages and tools, the
/// choice as llama.cpp takes it (a named function is the tools list cut to it, `required`;
/// `auto` beside an answer format is the tools and the answer function, `required`).
pub(super) fn chat_request(task: &Task, messages: &[ChatMessage], answer: Option<&Tool>) -> Value {
    let (tools, choice): (Vec<_>, _) = match &task.tool_choice {
        ToolChoice::Function(name) => (
            task.tools
                .iter()
                .filter(|t| t.function.name == *name)
                .collect(),
            "required",
        ),
        ToolChoice::Required => (task.tools.iter().collect(), "required"),
        ToolChoice::Auto => match answer {
            Some(answer) => (task.tools.iter().chain([answer]).collect(), "required"),
            None => (task.tools.iter().collect(), "auto"),
        },
        ToolChoice::None => (task.tools.iter().collect(), "none"),
    };
    json!({
        "messages": messages,
        "tools": tools,
        "tool_choice": choice,
        "parallel_tool_calls": task.parallel_tool_calls,
    })
}

/// What a task whose tools may be called needs while it generates.
pub(super) struct ToolUse {
    /// The tool-call grammar.
    pub grammar: ToolGrammar,
    /// The output reader (with the template's extra stop strings).
    pub output: ToolOutput,
}

/// What a chat task's rendering gives: the prompt text, and for a task whose tools may be
/// called its grammar and its output reader (with the template's extra stop strings). `tokens_of` tokenizes
/// text that follows the start of the prompt (special tokens parsed, no BOS).
pub(super) fn render(
    template: &ChatTemplate,
    task: &Task,
    messages: &[ChatMessage],
    tokens_of: impl Fn(&str) -> Vec<LlamaToken>,
) -> Result<(String, Option<ToolUse>), TaskError> {
    let apply = |request: &Value| {
        template.apply(request).map_err(|why| {
            TaskError::invalid(format!("the chat template refused the request: {why}"))
        })
    };
    let answer = answer_tool(task);
    let request = chat_request(task, messages, answer.as_ref());
    let rendered = apply(&request)?;
    if task.tool_choice == ToolChoice::None {
        return Ok((rendered.prompt, None));
    }
    if rendered.grammar.is_empty() {
        return Err(TaskError::invalid(
            "this model's chat template does not render tools (llama.cpp finds no tool-call \
             syntax in it): send no `tools`, or `tool_choice: \"none\"`",
        ));
    }
    // A call is required: llama.cpp's grammar still lets text come before it, which a model
    // that does not follow instructions fills to its token limit. The answer starts with the
    // call instead, from the text that begins a call when the model decides (`auto`'s
    // literal trigger), put at the end of the prompt and through the grammar.
    let call_start = if rendered.grammar_lazy {
        String::new()
    } else {
        let mut auto = request;
        auto["tool_choice"] = Value::from("auto");
        let words = apply(&auto)?.trigger_words;
        match words.as_slice() {
            [word] => word.clone(),
            _ => String::new(),
        }
    };
    let grammar = ToolGrammar {
        grammar: rendered.grammar.clone(),
        lazy: rendered.grammar_lazy,
        patterns: rendered.trigger_patterns.clone(),
        trigger_tokens: rendered
            .trigger_tokens
            .iter()
            .flat_map(|text| tokens_of(text))
            .collect(),
        prefill: if rendered.grammar_lazy {
            Vec::new()
        } else {
            tokens_of(&format!("{}{call_start}", rendered.generation_prompt))
        },
        prefill_text: format!("{}{call_start}", rendered.generation_prompt),
    };
    let parser = OutputParser::of(&rendered).map_err(TaskError::internal)?;
    tracing::debug!(format = %rendered.format_name, lazy = grammar.lazy, %call_start, "tools rendered");
    // A named function is called once, as OpenAI does when it forces one.
    let single = !task.parallel_tool_calls || matches!(task.tool_choice, ToolChoice::Function(_));
    // A marker that is one special token is rendered as its text, as llama-server does.
    let preserved = rendered
        .preserved_tokens
        .iter()
        .filter_map(|text| match tokens_of(text).as_slice() {
            [token] => Some(*token),
            _ => None,
        })
        .collect();
    // The literal texts that open a call: `auto`'s triggers, or the required call's start.
    let openers = if rendered.grammar_lazy {
        rendered.trigger_words.clone()
    } else {
        [call_start.clone()]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect()
    };
    let output = ToolOutput::new(parser, call_start.clone(), !single)
        .preserving(preserved)
        .answering(answer.map(|tool| tool.function.name))
        .delimited(openers, rendered.additional_stops);
    let prompt = format!("{}{call_start}", rendered.prompt);
    Ok((prompt, Some(ToolUse { grammar, output })))
}

#[cfg(test)]
#[path = "tools_tests.rs"]
mod tests;
