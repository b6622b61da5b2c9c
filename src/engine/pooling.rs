//! Pooling: one input's vector from its tokens' vectors (`engine.pooling`), as llama.cpp's
//! own pooling computes it. Pure: the embed loop hands it the rows it read from the context.

use std::ops::Range;

use crate::config::Pooling;
use crate::protocol::{ErrorCode, TaskError};

/// The vector of the input whose tokens sit in `span`: the mean of their rows, the last row,
/// or the first. `row` gives a row's vector of `width` values, `None` when the model gave none.
pub(super) fn pool<'r>(
    span: Range<usize>,
    pooling: Pooling,
    width: usize,
    row: impl Fn(usize) -> Option<&'r [f32]>,
) -> Result<Vec<f32>, TaskError> {
    let no_vector = || {
        TaskError::new(
            ErrorCode::InferenceFailed,
            "the model gave no token vectors: it cannot embed",
        )
    };
    let rows = match pooling {
        Pooling::Mean => span,
        Pooling::Last => span.end - 1..span.end,
        Pooling::Cls => span.start..span.start + 1,
    };
    let count = rows.len() as f32;
    let mut sum = vec![0f32; width];
    for index in rows {
        let vector = row(index).ok_or_else(no_vector)?;
        for (total, value) in sum.iter_mut().zip(vector) {
            *total += value;
        }
    }
    for total in &mut sum {
        *total /= count;
    }
    Ok(sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROWS: [[f32; 2]; 4] = [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]];

    fn pooled(span: Range<usize>, pooling: Pooling) -> Result<Vec<f32>, TaskError> {
        pool(span, pooling, 2, |i| ROWS.get(i).map(|r| r.as_slice()))
    }

    #[test]
    fn an_input_is_pooled_over_its_own_rows_only() {
        assert_eq!(pooled(1..4, Pooling::Mean).unwrap(), vec![5.0, 6.0]);
        assert_eq!(pooled(1..4, Pooling::Last).unwrap(), vec![7.0, 8.0]);
        assert_eq!(pooled(1..4, Pooling::Cls).unwrap(), vec![3.0, 4.0]);
    }

    #[test]
    fn a_row_without_a_vector_is_an_inference_failure() {
        let err = pooled(3..5, Pooling::Mean).unwrap_err();
        assert_eq!(err.code, ErrorCode::InferenceFailed);
    }
}
