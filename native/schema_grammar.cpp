// llama.cpp's JSON Schema to GBNF converter, called with its error message kept.
// llama-cpp-2's own wrapper (llama_rs_json_schema_to_grammar) catches the converter's
// exception and returns only a status code; this does the same call and hands back the
// exception's text, so a schema llama.cpp refuses is answered with llama.cpp's reason.
// Built by build.rs against the llama.cpp tree that llama-cpp-sys-2 compiles and links.

#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>

#include "json-schema-to-grammar.h"

// A malloc'd copy (null when allocation fails). It cannot throw: it runs in catch blocks,
// and an exception leaving an extern "C" function would unwind into Rust.
static char * warren_dup(const char * text) noexcept {
    const size_t size = std::strlen(text) + 1;
    char * copy = static_cast<char *>(std::malloc(size));
    if (copy) {
        std::memcpy(copy, text, size);
    }
    return copy;
}

static char * warren_dup(const std::string & text) noexcept {
    return warren_dup(text.c_str());
}

// 0: *out holds the grammar; 1: *out holds why the schema was refused. *out is freed with
// warren_schema_text_free (null when allocation failed).
extern "C" int warren_json_schema_to_grammar(const char * schema_json, char ** out) noexcept {
    *out = nullptr;
    try {
        const auto schema = common_json::parse(schema_json);
        *out = warren_dup(json_schema_to_grammar(schema, true));
        return 0;
    } catch (const std::exception & e) {
        *out = warren_dup(e.what());
        return 1;
    } catch (...) {
        *out = warren_dup("the converter failed without a message");
        return 1;
    }
}

extern "C" void warren_schema_text_free(char * text) noexcept {
    std::free(text);
}
