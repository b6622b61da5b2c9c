//! How far llama.cpp's grammar sampler expands a grammar's rules, decided from the rules
//! alone before it builds one. llama.cpp keeps one stack per way the text so far can go on:
//! at a position it replaces a reference to a rule by each of the rule's alternatives (the
//! reference's continuation pushed under it), and an item that can match nothing also by what
//! follows it, until each stack's top consumes input. Two shapes make that unbounded:
//! - a rule that begins with itself with something after it (each turn pushes the
//!   continuation again, for ever). llama.cpp refuses left recursion only when the rules
//!   before it are empty as written, so `x root "a"` with `x ::= "c"?` passes its check;
//! - nested repetitions of something that can match nothing (`((("a"?){0,N}){0,N}){0,N}`):
//!   each level multiplies the stacks by N, and llama.cpp dedups new stacks by a linear
//!   search, so their number squared is the engine thread's time.
//!
//! Both are found here, in time linear in the rules and without recursion: a short grammar
//! can expand to many thousand rules (each `{0,N}` is a chain of N).

use petgraph::algo::kosaraju_scc;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;

/// The most stacks topped by input one expansion may hold. llama.cpp dedups each new one by
/// a linear search of the others, so their number squared is the time: this is more than a
/// grammar within the size limit yields without nesting repetitions of what can match
/// nothing (`docs/src/wire-contract/structured-output.md` gives what it costs).
pub(super) const MAX_STACKS: u64 = 10_000;

/// The most stacks of any kind one expansion may visit (llama.cpp keeps each in an ordered
/// set): rules that match only nothing, nested, multiply these without adding the first kind.
pub(super) const MAX_VISITED: u64 = 200_000;

/// How many stacks expanding something may hold, as upper bounds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Stacks {
    /// Those whose top consumes input: what the expansion yields.
    on_input: u64,
    /// Every one visited on the way, those included.
    visited: u64,
}

impl Stacks {
    const TERMINAL: Stacks = Stacks {
        on_input: 1,
        visited: 1,
    };

    fn plus(self, other: Stacks) -> Stacks {
        Stacks {
            on_input: self.on_input.saturating_add(other.on_input),
            visited: self.visited.saturating_add(other.visited),
        }
    }

    /// A reference on top, then what expanding the rule it names holds.
    fn under_reference(self) -> Stacks {
        Stacks {
            on_input: self.on_input,
            visited: self.visited.saturating_add(1),
        }
    }

    fn too_many(self) -> bool {
        self.on_input > MAX_STACKS || self.visited > MAX_VISITED
    }
}

/// One item of an alternative: another rule, or something that consumes input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Item {
    Rule(usize),
    Terminal,
}

/// A grammar's rules by id: each a list of alternatives, each a sequence of items.
pub(super) type Rules = [Vec<Vec<Item>>];

/// What expanding a grammar from `root` costs llama.cpp.
#[derive(Debug, PartialEq)]
pub(super) enum Expansion {
    /// Every expansion ends within [`MAX_STACKS`] and [`MAX_VISITED`].
    Bounded,
    /// This rule (reachable from `root`) can begin with itself with something after it.
    LeftRecursive(usize),
    /// Expanding a position in this rule may pass [`MAX_STACKS`] or [`MAX_VISITED`].
    TooManyStacks(usize),
}

/// How llama.cpp's expansion of `rules` from `root` ends, if it does.
pub(super) fn expansion(rules: &Rules, root: usize) -> Expansion {
    let reachable = reachable_from(rules, root);
    let nullable = can_match_nothing(rules);
    let starts = Starts::of(rules, &reachable, &nullable);
    let sccs = kosaraju_scc(&starts.graph);
    let mut component = vec![0usize; rules.len()];
    for (id, members) in sccs.iter().enumerate() {
        for node in members {
            component[node.index()] = id;
        }
    }
    // A cycle of references each last in its alternative pushes nothing, so llama.cpp's
    // set of stacks seen ends it (its tool-call grammars hold such cycles); one with
    // something after a reference grows the stack on every turn.
    let same = |edge: &petgraph::graph::EdgeReference<'_, bool>| {
        component[edge.source().index()] == component[edge.target().index()]
    };
    if let Some(edge) = starts
        .graph
        .edge_references()
        .find(|e| *e.weight() && same(e))
    {
        return Expansion::LeftRecursive(edge.target().index());
    }
    // Stacks from expanding a reference to each rule. Kosaraju gives components in reverse
    // topological order, so every rule a component refers to outside itself is done before
    // it. Within a component every reference is last, so each member yields no stack its
    // fellows do not: the component's count is the sum of its members' own.
    let mut stacks = vec![Stacks::default(); rules.len()];
    for members in &sccs {
        let mut own = Stacks::default();
        for node in members {
            let terminals = starts.terminals[node.index()];
            own = own.plus(Stacks {
                on_input: terminals,
                visited: terminals,
            });
            for edge in starts.graph.edges(*node) {
                let within = if same(&edge) {
                    Stacks::default()
                } else {
                    stacks[edge.target().index()]
                };
                own = own.plus(within.under_reference());
            }
        }
        for node in members {
            stacks[node.index()] = own;
        }
    }
    // llama.cpp begins with every alternative of `root` at once.
    if stacks.get(root).is_some_and(|s| s.too_many()) {
        return Expansion::TooManyStacks(root);
    }
    // Every position llama.cpp expands from: an alternative's start, or what follows
    // something that consumed input. When what is left of an alternative can match nothing,
    // the stack's next position is expanded in turn: along one stack positions add up,
    // never multiply.
    for (rule, alternatives) in rules.iter().enumerate().filter(|(r, _)| reachable[*r]) {
        for items in alternatives {
            let mut from_here = Stacks::default();
            for item in items.iter().rev() {
                from_here = match *item {
                    Item::Terminal => Stacks::TERMINAL,
                    Item::Rule(to) => {
                        let within = stacks.get(to).copied().unwrap_or_default();
                        let empty = nullable.get(to) == Some(&true);
                        let then = if empty { from_here } else { Stacks::default() };
                        within.under_reference().plus(then)
                    }
                };
                if from_here.too_many() {
                    return Expansion::TooManyStacks(rule);
                }
            }
        }
    }
    Expansion::Bounded
}

/// The rules each reachable rule can begin with: an edge to each rule referred to before
/// the first item that must consume input, weighted by whether something follows that
/// reference in its alternative; and how many of its alternatives reach a terminal that
/// way (each a stack).
struct Starts {
    graph: DiGraph<(), bool>,
    terminals: Vec<u64>,
}

impl Starts {
    fn of(rules: &Rules, reachable: &[bool], nullable: &[bool]) -> Self {
        let mut graph = DiGraph::<(), bool>::with_capacity(rules.len(), rules.len());
        let nodes: Vec<NodeIndex> = rules.iter().map(|_| graph.add_node(())).collect();
        let mut terminals = vec![0u64; rules.len()];
        for (rule, alternatives) in rules.iter().enumerate().filter(|(r, _)| reachable[*r]) {
            for items in alternatives {
                for (i, item) in items.iter().enumerate() {
                    let Item::Rule(to) = *item else {
                        terminals[rule] += 1;
                        break;
                    };
                    let Some(&target) = nodes.get(to) else { break };
                    graph.add_edge(nodes[rule], target, i + 1 < items.len());
                    if !nullable[to] {
                        break;
                    }
                }
            }
        }
        Starts { graph, terminals }
    }
}

/// The rules `root` can reach through any reference (llama.cpp expands no other).
fn reachable_from(rules: &Rules, root: usize) -> Vec<bool> {
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
fn can_match_nothing(rules: &Rules) -> Vec<bool> {
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
    use super::Item::{Rule, Terminal};
    use super::*;

    /// `r0 ::= "a" | ""` and `rk ::= r(k-1) "b"` for k in 1..length: each rule begins with
    /// the one before it.
    fn chain(length: usize) -> Vec<Vec<Vec<Item>>> {
        let mut rules = vec![vec![vec![Terminal], vec![]]];
        for k in 1..length {
            rules.push(vec![vec![Rule(k - 1), Terminal]]);
        }
        rules
    }

    #[test]
    fn stacks_are_counted_through_rules_that_can_match_nothing() {
        // r1 ::= r0 "b": r0's "a", r0's empty then "b", and the reference itself.
        assert_eq!(expansion(&chain(2), 1), Expansion::Bounded);
        // Each rule after visits one more stack than the one it begins with: counts add up
        // from the chain's end (in Kosaraju's order), to exactly the bound and one past it.
        let last = MAX_VISITED as usize - 2;
        assert_eq!(expansion(&chain(last + 1), last), Expansion::Bounded);
        let last = MAX_VISITED as usize - 1;
        assert_eq!(
            expansion(&chain(last + 1), last),
            Expansion::TooManyStacks(last)
        );
    }

    #[test]
    fn alternatives_of_alternatives_that_multiply_past_the_bound_are_refused() {
        // Rule k has 10 alternatives, each a reference to rule k-1 followed by something:
        // 10^k ways to begin, each a distinct stack topped by input.
        let mut rules: Vec<Vec<Vec<Item>>> = vec![vec![vec![Terminal]]];
        for k in 1..=5 {
            rules.push((0..10).map(|_| vec![Rule(k - 1), Terminal]).collect());
        }
        assert_eq!(
            expansion(&rules, 4),
            Expansion::Bounded,
            "10^4 stacks: the bound"
        );
        assert_eq!(
            expansion(&rules, 5),
            Expansion::TooManyStacks(5),
            "10^5 stacks"
        );
    }

    #[test]
    fn a_position_after_input_is_bounded_as_an_alternative_start_is() {
        // root ::= "x" big, where big begins in more ways than the bound allows.
        let mut rules: Vec<Vec<Vec<Item>>> = vec![vec![vec![Terminal, Rule(1)]]];
        rules.push((0..=MAX_STACKS).map(|_| vec![Terminal]).collect());
        assert_eq!(expansion(&rules, 0), Expansion::TooManyStacks(0));
    }

    #[test]
    fn a_cycle_of_last_references_counts_each_member_once() {
        // r ::= x r | "" ; x ::= "a" | "" : r's reference to itself is last.
        let rules = vec![
            vec![vec![Rule(1), Rule(0)], vec![]],
            vec![vec![Terminal], vec![]],
        ];
        assert_eq!(expansion(&rules, 0), Expansion::Bounded);
        // r ::= x r "a" | "b": something follows the reference to itself.
        let rules = vec![
            vec![vec![Rule(1), Rule(0), Terminal], vec![Terminal]],
            vec![vec![Terminal], vec![]],
        ];
        assert_eq!(expansion(&rules, 0), Expansion::LeftRecursive(0));
    }
}
