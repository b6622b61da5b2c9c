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

static char * warren_dup(const std::string & text) {
    char * copy = static_cast<char *>(std::malloc(text.size() + 1));
    if (copy) {
        std::memcpy(copy, text.c_str(), text.size() + 1);
    }
    return copy;
}

// 0: *out holds the grammar; 1: *out holds why the schema was refused. *out is freed with
// warren_schema_text_free (null when allocation failed).
extern "C" int warren_json_schema_to_grammar(const char * schema_json, char ** out) {
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

extern "C" void warren_schema_text_free(char * text) {
    std::free(text);
}
