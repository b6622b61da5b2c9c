// llama.cpp's own GBNF parser (src/llama-grammar.h), called to hand a grammar's parsed rules
// to Rust, which checks them for the left recursion llama.cpp's own check misses (see
// src/engine/grammar_rules.rs). Nothing here analyses the grammar: it only parses and copies.
// The function is noexcept and catches every exception, so none can unwind into Rust.
// Built by build.rs against the llama.cpp tree that llama-cpp-sys-2 compiles and links.

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "llama-grammar.h"

// 0: *elements holds *n_values uint32 values, a (type, value) pair per grammar element: every
// rule in rule-id order, each ending with LLAMA_GRETYPE_END; *names holds each rule id's name
// followed by '\n', in id order. 1: llama.cpp's parser refused the grammar (it says why when
// the sampler is built). 2: out of memory or another failure. Free both outputs with
// warren_grammar_rules_free (null pointers are fine).
extern "C" int warren_grammar_rules(const char * gbnf, uint32_t ** elements, size_t * n_values,
                                    char ** names) noexcept {
    *elements = nullptr;
    *n_values = 0;
    *names = nullptr;
    try {
        // No vocabulary: a token named by its text (`<name>`) does not parse; the caller
        // writes every token by id first.
        llama_grammar_parser parser;
        if (!parser.parse(gbnf)) {
            return 1;
        }
        std::vector<uint32_t> flat;
        for (const auto & rule : parser.rules) {
            for (const auto & element : rule) {
                flat.push_back(static_cast<uint32_t>(element.type));
                flat.push_back(element.value);
            }
        }
        std::vector<std::string> by_id(parser.rules.size());
        for (const auto & named : parser.symbol_ids) {
            if (named.second < by_id.size()) {
                by_id[named.second] = named.first;
            }
        }
        std::string joined;
        for (const auto & name : by_id) {
            joined += name;
            joined += '\n';
        }
        uint32_t * values = static_cast<uint32_t *>(std::malloc((flat.size() + 1) * sizeof(uint32_t)));
        char * text = static_cast<char *>(std::malloc(joined.size() + 1));
        if (!values || !text) {
            std::free(values);
            std::free(text);
            return 2;
        }
        std::memcpy(values, flat.data(), flat.size() * sizeof(uint32_t));
        std::memcpy(text, joined.c_str(), joined.size() + 1);
        *elements = values;
        *n_values = flat.size();
        *names = text;
        return 0;
    } catch (...) {
        return 2;
    }
}

extern "C" void warren_grammar_rules_free(uint32_t * elements, char * names) noexcept {
    std::free(elements);
    std::free(names);
}
