//! Left recursion in a GBNF grammar, found before llama.cpp builds its sampler. llama.cpp
//! refuses a rule that begins with itself, but its check counts a rule as able to match
//! nothing only when one of its alternatives is empty as written: a rule that begins with
//! `x root` where `x ::= "c"?` passes, and building its sampler then expands stacks without
//! end (the engine thread hangs, its memory grows). Here llama.cpp's own parser
//! (`native/grammar_rules.cpp`) reads the grammar, every rule that can match nothing is
//! found, then every rule reachable from `root` that can begin with itself through such
//! rules. Its unsafe code is that one FFI call (`lib.rs` lists every module with
//! unsafe code).

#![allow(unsafe_code)]

use std::borrow::Cow;
use std::ffi::{c_char, CStr, CString};

use petgraph::algo::kosaraju_scc;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;

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

/// One item of an alternative: another rule, or something that consumes input.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Item {
    Rule(usize),
    Terminal,
}

/// A grammar's rules by id: each a list of alternatives, each a sequence of items.
#[derive(Debug, PartialEq)]
struct Rules {
    alternatives: Vec<Vec<Vec<Item>>>,
    names: Vec<String>,
}

/// What the check found in a grammar.
#[derive(Debug, PartialEq)]
pub(super) enum Verdict {
    /// No rule reachable from `root` begins with itself in a way llama.cpp cannot run.
    Runnable,
    /// This rule (reachable from `root`) can begin with itself.
    LeftRecursive(String),
    /// llama.cpp's parser refused the grammar (it logs why).
    Unparsed,
}

/// Whether llama.cpp can run `gbnf` as far as left recursion goes.
pub(super) fn check(gbnf: &str) -> Verdict {
    let Some(rules) = parse(&tokens_by_id(gbnf)) else {
        return Verdict::Unparsed;
    };
    let Some(root) = rules.names.iter().position(|name| name == "root") else {
        // No `root`: llama.cpp refuses the grammar itself, saying so.
        return Verdict::Runnable;
    };
    match left_recursion(&rules.alternatives, root) {
        Some(rule) => Verdict::LeftRecursive(rules.names.get(rule).cloned().unwrap_or_default()),
        None => Verdict::Runnable,
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

/// A rule reachable from `root` that can begin with itself (directly, or after rules that
/// can match nothing) through a reference that something follows. llama.cpp expands a
/// rule's beginnings depth-first, keeping each reference's continuation on its stack: a
/// cycle of references that are all last in their alternatives leaves the stack as it was,
/// so llama.cpp's own dedup of stacks ends it (its tool-call grammars hold such cycles), but
/// one with a continuation grows the stack on every turn and never ends. Linear in the
/// grammar's size and without recursion: a short grammar can expand to many thousand rules.
fn left_recursion(rules: &[Vec<Vec<Item>>], root: usize) -> Option<usize> {
    let reachable = reachable_from(rules, root);
    let nullable = can_match_nothing(rules);
    // An edge from each rule to each rule it can begin with, weighted by whether
    // something follows that reference in its alternative.
    let mut starts = DiGraph::<(), bool>::with_capacity(rules.len(), rules.len());
    let nodes: Vec<NodeIndex> = rules.iter().map(|_| starts.add_node(())).collect();
    for (rule, alternatives) in rules.iter().enumerate().filter(|(r, _)| reachable[*r]) {
        for items in alternatives {
            for (i, item) in items.iter().enumerate() {
                let Item::Rule(to) = *item else { break };
                let Some(&target) = nodes.get(to) else { break };
                starts.add_edge(nodes[rule], target, i + 1 < items.len());
                if !nullable[to] {
                    break;
                }
            }
        }
    }
    // petgraph's Kosaraju walks with its own stack (its Tarjan recurses per node).
    let mut component = vec![0usize; rules.len()];
    for (id, members) in kosaraju_scc(&starts).iter().enumerate() {
        for node in members {
            component[node.index()] = id;
        }
    }
    starts
        .edge_references()
        .find(|edge| {
            *edge.weight() && component[edge.source().index()] == component[edge.target().index()]
        })
        .map(|edge| edge.target().index())
}

/// The rules `root` can reach through any reference (llama.cpp expands no other).
fn reachable_from(rules: &[Vec<Vec<Item>>], root: usize) -> Vec<bool> {
    let mut reachable = vec![false; rules.len()];
    let mut todo = vec![root];
    while let Some(rule) = todo.pop() {
        if rule >= rules.len() || std::mem::replace(&mut reachable[rule], true) {
            continue;
        }
        for item in rules[rule].iter().flatten() {
            if let Item::Rule(to) = *item {
                todo.push(to);
            }
        }
    }
    reachable
}

/// Which rules can match the empty text: a rule may be empty only through others, so each
/// alternative counts the references it still waits on, and a rule found empty is taken off
/// the count of every alternative that refers to it (linear, unlike repeated passes).
fn can_match_nothing(rules: &[Vec<Vec<Item>>]) -> Vec<bool> {
    let mut nullable = vec![false; rules.len()];
    // For each rule, the (rule, alternative) pairs that refer to it, once per reference.
    let mut referrers: Vec<Vec<(usize, usize)>> = vec![Vec::new(); rules.len()];
    let mut waiting: Vec<Vec<usize>> = Vec::with_capacity(rules.len());
    let mut empty = Vec::new();
    for (rule, alternatives) in rules.iter().enumerate() {
        let mut counts = Vec::with_capacity(alternatives.len());
        for (alt, items) in alternatives.iter().enumerate() {
            let refs: Vec<usize> = items
                .iter()
                .map_while(|item| match *item {
                    Item::Rule(to) if to < rules.len() => Some(to),
                    _ => None,
                })
                .collect();
            if refs.len() < items.len() {
                // Something that consumes input: this alternative never matches nothing.
                counts.push(usize::MAX);
                continue;
            }
            for &to in &refs {
                referrers[to].push((rule, alt));
            }
            if refs.is_empty() {
                empty.push(rule);
            }
            counts.push(refs.len());
        }
        waiting.push(counts);
    }
    while let Some(rule) = empty.pop() {
        if std::mem::replace(&mut nullable[rule], true) {
            continue;
        }
        for &(referrer, alt) in &referrers[rule] {
            let count = &mut waiting[referrer][alt];
            *count -= 1;
            if *count == 0 {
                empty.push(referrer);
            }
        }
    }
    nullable
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
        for gbnf in FINE {
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
        // Each repetition becomes a chain of some 2,000 rules, each able to match nothing.
        let levels: String = (1..=5)
            .map(|k| format!("a{k} ::= a{}{{0,1999}}\n", k - 1))
            .collect();
        let deep = format!("root ::= a5 \"z\"\n{levels}a0 ::= \"a\"?");
        assert_eq!(check(&deep), Verdict::Runnable);
        let recursive = format!("root ::= a5 root \"z\" | \"y\"\n{levels}a0 ::= \"a\"?");
        assert_eq!(check(&recursive), Verdict::LeftRecursive("root".into()));
    }
}
