//! A GBNF grammar read by llama.cpp's own parser (`native/grammar_rules.cpp`) before llama.cpp
//! builds its sampler, and checked for the shapes on which building or running that sampler
//! never ends or holds the engine thread for minutes (`super::grammar_expansion` says which
//! and why). Its unsafe code is that one FFI call (`lib.rs` lists every module with unsafe
//! code).

#![allow(unsafe_code)]

use std::borrow::Cow;
use std::ffi::{c_char, CStr, CString};

use super::grammar_expansion::{self, Expansion, Item};

extern "C" {
    /// `native/grammar_rules.cpp`: llama.cpp's parse of `gbnf`, flattened.
    fn warren_grammar_rules(
        gbnf: *const c_char,
        elements: *mut *mut u32,
        n_values: *mut usize,
        names: *mut *mut c_char,
    ) -> i32;
    fn warren_grammar_rules_free(elements: *mut u32, names: *mut c_char);
}

/// llama.cpp's element types (`enum llama_gretype` in src/llama-grammar.h) that matter here.
const END: u32 = 0;
const ALT: u32 = 1;
const RULE_REF: u32 = 2;
/// Modifiers of the character element before them (a range's upper end, another choice).
const CHAR_RNG_UPPER: u32 = 5;
const CHAR_ALT: u32 = 6;

/// A grammar's rules by id: each a list of alternatives, each a sequence of items.
#[derive(Debug, PartialEq)]
struct Rules {
    alternatives: Vec<Vec<Vec<Item>>>,
    names: Vec<String>,
}

/// What the check found in a grammar.
#[derive(Debug, PartialEq)]
pub(super) enum Verdict {
    /// llama.cpp's expansion of the grammar ends, each holding a bounded number of stacks.
    Runnable,
    /// This rule (reachable from `root`) can begin with itself with something after it.
    LeftRecursive(String),
    /// Expanding a position in this rule could hold more than
    /// [`grammar_expansion::MAX_STACKS`] stacks.
    TooManyStacks(String),
    /// llama.cpp's parser refused the grammar (it logs why).
    Unparsed,
}

/// Whether llama.cpp can run `gbnf` in bounded time, as far as its rules' shape goes.
pub(super) fn check(gbnf: &str) -> Verdict {
    let Some(rules) = parse(&tokens_by_id(gbnf)) else {
        return Verdict::Unparsed;
    };
    let Some(root) = rules.names.iter().position(|name| name == "root") else {
        // No `root`: llama.cpp refuses the grammar itself, saying so.
        return Verdict::Runnable;
    };
    let name = |rule: usize| rules.names.get(rule).cloned().unwrap_or_default();
    match grammar_expansion::expansion(&rules.alternatives, root) {
        Expansion::Bounded => Verdict::Runnable,
        Expansion::LeftRecursive(rule) => Verdict::LeftRecursive(name(rule)),
        Expansion::TooManyStacks(rule) => Verdict::TooManyStacks(name(rule)),
    }
}

/// `gbnf` with every token written by its text (`<name>`, `!<name>`) written by an id
/// instead (`<[0]>`): the parser has no vocabulary, and which token it is does not matter
/// for left recursion (a token always consumes input).
fn tokens_by_id(gbnf: &str) -> Cow<'_, str> {
    if !gbnf.contains('<') {
        return Cow::Borrowed(gbnf);
    }
    let mut out = String::with_capacity(gbnf.len());
    let mut chars = gbnf.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' | '[' => {
                let close = if c == '"' { '"' } else { ']' };
                out.push(c);
                while let Some(c) = chars.next() {
                    out.push(c);
                    if c == '\\' {
                        out.extend(chars.next());
                    } else if c == close {
                        break;
                    }
                }
            }
            '#' => {
                // As llama.cpp's parser: a comment ends at either line break.
                out.push(c);
                for c in chars.by_ref() {
                    out.push(c);
                    if c == '\n' || c == '\r' {
                        break;
                    }
                }
            }
            '<' if chars.peek() != Some(&'[') => {
                for c in chars.by_ref() {
                    if c == '>' {
                        break;
                    }
                }
                out.push_str("<[0]>");
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// llama.cpp's parse of `gbnf`, or `None` when it refuses it.
fn parse(gbnf: &str) -> Option<Rules> {
    let text = CString::new(gbnf).ok()?;
    let mut elements: *mut u32 = std::ptr::null_mut();
    let mut n_values = 0usize;
    let mut names: *mut c_char = std::ptr::null_mut();
    // SAFETY: `text` is a NUL-terminated string alive for the call; the three out-pointers
    // point at locals the shim writes (nulls and 0 on failure). On success the shim has set
    // `elements` to a malloc'd array of `n_values` u32 values and `names` to a malloc'd
    // NUL-terminated string, which are read here and then freed once by
    // `warren_grammar_rules_free`, which also accepts nulls.
    unsafe {
        let status = warren_grammar_rules(text.as_ptr(), &mut elements, &mut n_values, &mut names);
        let parsed = (status == 0 && !elements.is_null() && !names.is_null()).then(|| {
            let values = std::slice::from_raw_parts(elements, n_values).to_vec();
            let names = CStr::from_ptr(names).to_string_lossy().into_owned();
            (values, names)
        });
        warren_grammar_rules_free(elements, names);
        let (values, names) = parsed?;
        Some(Rules {
            alternatives: rules_of(&values),
            names: names.lines().map(str::to_owned).collect(),
        })
    }
}

/// The rules of llama.cpp's flattened (type, value) pairs.
fn rules_of(values: &[u32]) -> Vec<Vec<Vec<Item>>> {
    let mut rules = Vec::new();
    let mut rule = vec![Vec::new()];
    for pair in values.chunks_exact(2) {
        let last = rule.len() - 1;
        match pair[0] {
            END => {
                rules.push(std::mem::replace(&mut rule, vec![Vec::new()]));
            }
            ALT => rule.push(Vec::new()),
            RULE_REF => rule[last].push(Item::Rule(pair[1] as usize)),
            CHAR_RNG_UPPER | CHAR_ALT => {}
            _ => rule[last].push(Item::Terminal),
        }
    }
    rules
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn left_recursion_hidden_behind_rules_that_match_nothing_is_found() {
        for (gbnf, rule) in [
            ("root ::= root \"a\" | \"b\"", "root"),
            ("root ::= x root \"a\" | \"b\"\nx ::= \"c\"?", "root"),
            (
                "root ::= x y root \"a\" | \"b\"\nx ::= \"c\"*\ny ::= x",
                "root",
            ),
            (
                "root ::= \"b\" r\nr ::= (\"c\" | ) s\ns ::= r \"a\" | \"d\"",
                "r",
            ),
        ] {
            assert_eq!(check(gbnf), Verdict::LeftRecursive(rule.into()), "{gbnf}");
        }
    }

    /// The largest `n` of [`nested_repetitions`] found fine.
    const LARGEST_FINE_NESTING: u32 = 21;

    /// Grammars llama.cpp can run, some with left recursion of the kind its stacks survive.
    const FINE: [&str; 7] = [
        "root ::= \"(\" root \")\" | \"x\"",
        "root ::= x \"a\" root | \"b\"\nx ::= \"c\"?",
        "root ::= [a-z]+ (\",\" root)?",
        "root ::= <[2]> root | \"end\"",
        "root ::= <start_of_turn> \"[\" root \"]\" | \"x\" # a comment with \" and <\n",
        "root ::= \"<not a token>\" [<>] root?",
        // A cycle of references each last in its alternative (as llama.cpp's tool-call
        // grammars hold): llama.cpp's stacks do not grow on it.
        "root ::= r \"!\"\nr ::= x r | \"\"\nx ::= y\ny ::= \"a\" | \"\"",
    ];

    #[test]
    fn recursion_after_input_or_in_last_place_is_fine() {
        for gbnf in FINE {
            assert_eq!(check(gbnf), Verdict::Runnable, "{gbnf}");
        }
    }

    /// On the real model: llama.cpp builds a sampler for each grammar found fine (a hang here
    /// would mean the check lets through what llama.cpp cannot run).
    #[test]
    fn needs_model_llama_cpp_builds_what_is_found_fine() {
        let (_backend, model) = super::super::test_model::real_model();
        let nested = nested_repetitions("", LARGEST_FINE_NESTING);
        for gbnf in FINE.into_iter().chain([nested.as_str()]) {
            let built = llama_cpp_2::sampling::LlamaSampler::grammar(&model, gbnf, "root");
            assert!(built.is_ok(), "{gbnf}");
        }
    }

    #[test]
    fn tokens_named_by_text_are_written_by_id_and_literals_are_kept() {
        let gbnf = r#"root ::= <|call|> !<end> "a\"<b>" [<\]] # <c>
x ::= <[7]>"#;
        assert_eq!(
            tokens_by_id(gbnf),
            r#"root ::= <[0]> !<[0]> "a\"<b>" [<\]] # <c>
x ::= <[7]>"#
        );
        let named = "root ::= <x> root | \"y\"\nz ::= q <t> z\nq ::= \"\"";
        assert_eq!(check(named), Verdict::Runnable);
        assert_eq!(
            check("root ::= q <t> | q root \"a\"\nq ::= \"\""),
            Verdict::LeftRecursive("root".into())
        );
        // A comment ends at a carriage return too, as llama.cpp reads it.
        assert_eq!(
            check("root ::= x root \"a\" | \"b\" # c\ry ::= <t>\nx ::= \"c\"?"),
            Verdict::LeftRecursive("root".into())
        );
    }

    #[test]
    fn a_grammar_the_parser_refuses_is_unparsed() {
        assert_eq!(check("root ::= undefined-rule"), Verdict::Unparsed);
        assert_eq!(check("root ::= (\"a\""), Verdict::Unparsed);
        assert_eq!(check("nul \0 inside"), Verdict::Unparsed);
    }

    #[test]
    fn only_rules_root_reaches_count() {
        let unused = "root ::= \"a\"\nunused ::= x unused \"b\" | \"c\"\nx ::= \"d\"?";
        assert_eq!(check(unused), Verdict::Runnable);
        assert_eq!(
            check("start ::= start \"a\""),
            Verdict::Runnable,
            "no root: llama.cpp says so"
        );
    }

    #[test]
    fn a_grammar_of_many_thousand_rules_is_checked_without_recursion() {
        // Each repetition becomes a chain of some 2,000 rules, many able to match nothing.
        let levels = |min: u32| -> String {
            (1..=5)
                .map(|k| format!("a{k} ::= a{}{{{min},1999}}\n", k - 1))
                .collect()
        };
        let deep = format!("root ::= a5 \"z\"\n{}a0 ::= \"a\"", levels(1));
        assert_eq!(check(&deep), Verdict::Runnable);
        let nested = format!("root ::= a5 \"z\"\n{}a0 ::= \"a\"?", levels(0));
        assert_eq!(check(&nested), Verdict::TooManyStacks("root".into()));
        let recursive = format!("root ::= a5 root \"z\" | \"y\"\n{}a0 ::= \"a\"?", levels(0));
        assert_eq!(check(&recursive), Verdict::LeftRecursive("root".into()));
    }

    /// Three levels of `{0,n}` over `"a"?`, after `prefix`: some n³ ways to begin.
    fn nested_repetitions(prefix: &str, n: u32) -> String {
        format!(
            "root ::= {prefix} a3 \"b\"\na3 ::= a2{{0,{n}}}\na2 ::= a1{{0,{n}}}\n\
             a1 ::= a0{{0,{n}}}\na0 ::= \"a\"?"
        )
    }

    #[test]
    fn nested_repetitions_of_what_can_match_nothing_are_refused() {
        // Before this check, llama.cpp took some two minutes building this one's sampler.
        let refused = Verdict::TooManyStacks("root".into());
        assert_eq!(check(&nested_repetitions("", 60)), refused);
        // The same stacks after input: llama.cpp would expand them at the first token.
        assert_eq!(check(&nested_repetitions("\"x\"", 60)), refused);
        assert_eq!(
            check(&nested_repetitions("", LARGEST_FINE_NESTING)),
            Verdict::Runnable
        );
        assert_eq!(
            check(&nested_repetitions("", LARGEST_FINE_NESTING + 1)),
            refused
        );
    }
}
