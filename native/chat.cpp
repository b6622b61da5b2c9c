// llama.cpp's chat machinery (common/chat.h), called from Rust through a C interface: a
// Jinja chat template plus OpenAI-shaped messages and tools becomes the prompt, the tool-call
// grammar with its lazy triggers, and the parser that turns the output back into content
// and tool calls. This is what llama-server does with a request; none of it is re-implemented.
// Every function catches every C++ exception and hands its text back, so a template or
// schema llama.cpp refuses is answered with llama.cpp's reason instead of an abort; each is
// noexcept, so an exception that escaped anyway would end the process (std::terminate)
// rather than unwind into Rust.
// Built by build.rs against the llama.cpp tree that llama-cpp-sys-2 compiles and links.

#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <string>

#include "chat.h"
#include "common.h"

// A malloc'd copy (null when allocation fails). It cannot throw: it runs in catch blocks,
// and an exception leaving an extern "C" function would unwind into Rust.
static char * warren_chat_dup(const char * text) noexcept {
    const size_t size = std::strlen(text) + 1;
    char * copy = static_cast<char *>(std::malloc(size));
    if (copy) {
        std::memcpy(copy, text, size);
    }
    return copy;
}

static char * warren_chat_dup(const std::string & text) noexcept {
    return warren_chat_dup(text.c_str());
}

// Runs `body`, which sets *out; on an exception *out is its message and the result is 1.
template <typename F> static int warren_chat_guard(char ** out, F body) {
    *out = nullptr;
    try {
        body();
        return 0;
    } catch (const std::exception & e) {
        *out = warren_chat_dup(e.what());
        return 1;
    } catch (...) {
        *out = warren_chat_dup("llama.cpp failed without a message");
        return 1;
    }
}

// The templates are parsed once; llama.cpp keeps them behind this handle.
struct warren_chat {
    common_chat_templates_ptr templates;
    std::string bos_token;
    // Whether the tokenizer adds BOS itself: then a template's own leading BOS is dropped,
    // as llama.cpp does when it is given the model (warren passes no model pointer: its
    // Rust binding does not expose one), so the prompt holds exactly one BOS.
    bool add_bos;
};

// 0: *handle is set; 1: *error holds llama.cpp's reason (free it with warren_chat_text_free).
extern "C" int warren_chat_init(const char * template_source, const char * bos_token,
                                const char * eos_token, int add_bos, warren_chat ** handle,
                                char ** error) noexcept {
    *handle = nullptr;
    // Without a template llama.cpp takes the model's, and with no model (warren passes none)
    // it aborts on an assertion no catch can stop: refuse here instead.
    if (template_source == nullptr || template_source[0] == '\0') {
        *error = warren_chat_dup("no chat template was given");
        return 1;
    }
    return warren_chat_guard(error, [&] {
        auto templates = common_chat_templates_init(nullptr, template_source, bos_token, eos_token);
        *handle = new warren_chat{ std::move(templates), bos_token, add_bos != 0 };
    });
}

extern "C" void warren_chat_free(warren_chat * handle) noexcept {
    delete handle;
}

// What the template can render, as a JSON object of llama.cpp's capability flags.
extern "C" int warren_chat_caps(const warren_chat * handle, char ** out) noexcept {
    char * text = nullptr;
    const int status = warren_chat_guard(out, [&] {
        common_json caps = common_json::object();
        for (const auto & [name, value] : common_chat_templates_get_caps(handle->templates.get())) {
            caps[name] = value;
        }
        text = warren_chat_dup(caps.dump());
    });
    if (status == 0) {
        *out = text;
    }
    return status;
}

static const char * warren_tool_choice_name(common_chat_tool_choice choice) {
    switch (choice) {
        case COMMON_CHAT_TOOL_CHOICE_REQUIRED: return "required";
        case COMMON_CHAT_TOOL_CHOICE_NONE: return "none";
        default: return "auto";
    }
}

// request: {"messages": [OpenAI messages], "tools": [OpenAI tools] (optional),
// "tool_choice": "auto" | "required" | "none", "parallel_tool_calls": bool}.
// 0: *out is a JSON object {prompt, format, generation_prompt, grammar, grammar_lazy,
// trigger_patterns, trigger_words, trigger_tokens, preserved_tokens, additional_stops,
// parser}; the patterns and token texts are what llama.cpp's own sampler would use, the
// words are the literal triggers among them.
// 1: *out is llama.cpp's reason.
extern "C" int warren_chat_apply(const warren_chat * handle, const char * request_json, char ** out) noexcept {
    char * text = nullptr;
    const int status = warren_chat_guard(out, [&] {
        const auto request = common_json::parse(request_json);
        common_chat_templates_inputs inputs;
        inputs.messages = common_chat_msgs_parse_oaicompat(request.at("messages"));
        if (request.contains("tools") && !request.at("tools").empty()) {
            inputs.tools = common_chat_tools_parse_oaicompat(request.at("tools"));
        }
        inputs.tool_choice = common_chat_tool_choice_parse_oaicompat(request.value("tool_choice", "auto"));
        inputs.parallel_tool_calls = request.value("parallel_tool_calls", true);
        inputs.add_generation_prompt = true;
        auto params = common_chat_templates_apply(handle->templates.get(), inputs);
        if (handle->add_bos && !handle->bos_token.empty() &&
            params.prompt.compare(0, handle->bos_token.size(), handle->bos_token) == 0) {
            params.prompt = params.prompt.substr(handle->bos_token.size());
        }
        common_json patterns = common_json::array();
        common_json words = common_json::array();
        common_json tokens = common_json::array();
        for (const auto & trigger : params.grammar_triggers) {
            switch (trigger.type) {
                case COMMON_GRAMMAR_TRIGGER_TYPE_WORD:
                    patterns.push_back(regex_escape(trigger.value));
                    words.push_back(trigger.value);
                    break;
                case COMMON_GRAMMAR_TRIGGER_TYPE_PATTERN:
                    patterns.push_back(trigger.value);
                    break;
                case COMMON_GRAMMAR_TRIGGER_TYPE_PATTERN_FULL: {
                    const auto & pattern = trigger.value;
                    std::string anchored = "^$";
                    if (!pattern.empty()) {
                        anchored = (pattern.front() != '^' ? "^" : "") + pattern +
                                   (pattern.back() != '$' ? "$" : "");
                    }
                    patterns.push_back(anchored);
                    break;
                }
                case COMMON_GRAMMAR_TRIGGER_TYPE_TOKEN:
                    tokens.push_back(trigger.value);
                    break;
            }
        }
        common_json result = {
            { "prompt", params.prompt },
            { "format", static_cast<int>(params.format) },
            { "format_name", common_chat_format_name(params.format) },
            { "tool_choice", warren_tool_choice_name(inputs.tool_choice) },
            { "generation_prompt", params.generation_prompt },
            { "grammar", params.grammar },
            { "grammar_lazy", params.grammar_lazy },
            { "trigger_patterns", patterns },
            { "trigger_words", words },
            { "trigger_tokens", tokens },
            { "preserved_tokens", params.preserved_tokens },
            { "additional_stops", params.additional_stops },
            { "parser", params.parser },
        };
        text = warren_chat_dup(result.dump());
    });
    if (status == 0) {
        *out = text;
    }
    return status;
}

// The output parser warren_chat_apply returned (format, generation prompt and serialized
// parser), loaded once per task: loading it costs more than parsing a short output.
struct warren_chat_parser {
    common_chat_parser_params params;
};

// 0: *handle is set; 1: *error holds llama.cpp's reason (free it with warren_chat_text_free).
extern "C" int warren_chat_parser_init(int format, const char * generation_prompt, const char * parser,
                                       warren_chat_parser ** handle, char ** error) noexcept {
    *handle = nullptr;
    return warren_chat_guard(error, [&] {
        std::unique_ptr<warren_chat_parser> made(new warren_chat_parser());
        made->params.format = static_cast<common_chat_format>(format);
        made->params.generation_prompt = generation_prompt;
        made->params.parse_tool_calls = true;
        if (parser[0] != '\0') {
            made->params.parser.load(parser);
        }
        *handle = made.release();
    });
}

extern "C" void warren_chat_parser_free(warren_chat_parser * handle) noexcept {
    delete handle;
}

// Parses generated text. 0: *out is {content, reasoning_content, tool_calls: [{name,
// arguments, id}]}; 1: *out is llama.cpp's reason (the text does not match the format).
extern "C" int warren_chat_parse(const warren_chat_parser * handle, const char * generated, int is_partial,
                                 char ** out) noexcept {
    char * text = nullptr;
    const int status = warren_chat_guard(out, [&] {
        const auto message = common_chat_parse(generated, is_partial != 0, handle->params);
        common_json calls = common_json::array();
        for (const auto & call : message.tool_calls) {
            calls.push_back({ { "name", call.name }, { "arguments", call.arguments }, { "id", call.id } });
        }
        common_json result = {
            { "content", message.content },
            { "reasoning_content", message.reasoning_content },
            { "tool_calls", calls },
        };
        text = warren_chat_dup(result.dump());
    });
    if (status == 0) {
        *out = text;
    }
    return status;
}

extern "C" void warren_chat_text_free(char * text) noexcept {
    std::free(text);
}
