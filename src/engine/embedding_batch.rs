//! What one embedding decode holds, as pure values: which tokenized inputs share it (as
//! many as the context has sequences, as many rows as one micro-batch takes) and the rows
//! laid out for llama.cpp. Each input's rows are padded to a multiple of [`ROWS_ALIGNED`]
//! with a sequence of its own, whose vectors are dropped: llama.cpp's CPU matmuls take rows
//! in tiles and leftover rows by another kernel, which rounds differently, so an input must
//! land in whole tiles wherever it sits for its vector not to depend on what it shares a
//! decode with.

use std::iter::Peekable;
use std::ops::Range;

use super::embedding_model::Row;

/// Rows an input's tokens are padded to a multiple of: the CPU backend's quantized matmuls
/// take rows four at a time and some kernels switch at eight.
pub(super) const ROWS_ALIGNED: usize = 8;

/// Rows `tokens` tokens take in a decode, padding included.
pub(super) fn padded(tokens: usize) -> usize {
    tokens.div_ceil(ROWS_ALIGNED) * ROWS_ALIGNED
}

/// One input, tokenized, and where its vector goes: its job and its index in that job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Item {
    pub job: usize,
    pub index: usize,
    pub tokens: Vec<i32>,
}

/// How many inputs and rows one decode takes.
#[derive(Debug, Clone, Copy)]
pub(super) struct DecodeSize {
    pub inputs: usize,
    pub rows: usize,
}

impl DecodeSize {
    /// Takes from the front of `items` the inputs of the next decode, in order: as many as
    /// fit, and the first whatever its length (an input longer than a decode is refused
    /// before it gets here; were one to get here, its decode would fail, not loop).
    pub(super) fn next_group(self, items: &mut Peekable<impl Iterator<Item = Item>>) -> Vec<Item> {
        let mut group: Vec<Item> = Vec::new();
        let mut rows = 0;
        while let Some(item) = items.peek() {
            let fits = group.len() < self.inputs && rows + padded(item.tokens.len()) <= self.rows;
            if !fits && !group.is_empty() {
                break;
            }
            rows += padded(item.tokens.len());
            group.extend(items.next());
        }
        group
    }
}

/// The rows of one decode of `group`, each input its own sequence (its index in the group)
/// and the padding sequence `padding_sequence`, and the span of rows of each input.
pub(super) fn lay_out(
    group: &[Item],
    pad: i32,
    padding_sequence: i32,
) -> (Vec<Row>, Vec<Range<usize>>) {
    let mut padding_position = 0;
    let mut rows = Vec::with_capacity(group.iter().map(|item| padded(item.tokens.len())).sum());
    let mut spans = Vec::with_capacity(group.len());
    for (sequence, item) in group.iter().enumerate() {
        spans.push(rows.len()..rows.len() + item.tokens.len());
        rows.extend(
            item.tokens
                .iter()
                .enumerate()
                .map(|(position, &token)| Row {
                    token,
                    position: position as i32,
                    sequence: sequence as i32,
                }),
        );
        for _ in item.tokens.len()..padded(item.tokens.len()) {
            rows.push(Row {
                token: pad,
                position: padding_position,
                sequence: padding_sequence,
            });
            padding_position += 1;
        }
    }
    (rows, spans)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(job: usize, tokens: usize) -> Item {
        Item {
            job,
            index: 0,
            tokens: (1..=tokens as i32).collect(),
        }
    }

    fn groups(items: Vec<Item>, size: DecodeSize) -> Vec<Vec<usize>> {
        let mut items = items.into_iter().peekable();
        let mut groups = Vec::new();
        while items.peek().is_some() {
            groups.push(size.next_group(&mut items).iter().map(|i| i.job).collect());
        }
        groups
    }

    #[test]
    fn rows_are_padded_to_whole_tiles() {
        assert_eq!(padded(1), 8);
        assert_eq!(padded(8), 8);
        assert_eq!(padded(9), 16);
    }

    #[test]
    fn a_decode_takes_inputs_in_order_until_its_inputs_or_rows_are_spent() {
        let by_inputs = DecodeSize {
            inputs: 2,
            rows: 64,
        };
        let items = (0..5).map(|job| item(job, 3)).collect();
        assert_eq!(
            groups(items, by_inputs),
            vec![vec![0, 1], vec![2, 3], vec![4]]
        );
        // 9 tokens take 16 rows: two fit in 32, the third goes to the next decode.
        let by_rows = DecodeSize {
            inputs: 8,
            rows: 32,
        };
        let items = vec![item(0, 9), item(1, 9), item(2, 9), item(3, 8)];
        assert_eq!(groups(items, by_rows), vec![vec![0, 1], vec![2, 3]]);
    }

    #[test]
    fn an_input_longer_than_a_decode_goes_alone_rather_than_never() {
        let size = DecodeSize {
            inputs: 4,
            rows: 16,
        };
        let items = vec![item(0, 4), item(1, 40), item(2, 4)];
        assert_eq!(groups(items, size), vec![vec![0], vec![1], vec![2]]);
    }

    #[test]
    fn each_input_is_its_own_sequence_and_the_padding_another() {
        let (rows, spans) = lay_out(&[item(0, 3), item(1, 9)], -7, 5);
        assert_eq!(rows.len(), 8 + 16);
        assert_eq!(spans, vec![0..3, 8..17]);
        let of = |sequence| rows.iter().filter(move |row| row.sequence == sequence);
        // Each input's tokens at positions from 0, in its own sequence.
        assert_eq!(
            of(0).map(|r| (r.token, r.position)).collect::<Vec<_>>(),
            vec![(1, 0), (2, 1), (3, 2)]
        );
        assert_eq!(of(1).count(), 9);
        assert!(of(1).enumerate().all(|(i, r)| r.position == i as i32));
        // The padding: 5 rows after the first input, 7 after the second, one sequence whose
        // positions run on so that no two of its rows share a cell.
        let padding: Vec<_> = of(5).collect();
        assert_eq!(padding.len(), 5 + 7);
        assert!(padding.iter().all(|r| r.token == -7));
        assert!(padding
            .iter()
            .enumerate()
            .all(|(i, r)| r.position == i as i32));
        assert!(rows[3..8].iter().all(|r| r.sequence == 5));
        assert!(rows[17..].iter().all(|r| r.sequence == 5));
    }
}
