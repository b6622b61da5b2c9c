//! How a prompt is cut into decodes, so that the prefix cache cannot change a task's text.
//!
//! A token's computed state depends on the batch it was decoded in: on a CPU, llama.cpp's
//! quantized matrix products take rows in 4-row GEMM tiles and leftover rows through a GEMV,
//! and the two round differently. A prompt read cold and the same prompt read after a reused
//! prefix would be cut into different batches, and a seeded text diverges after a few tokens.
//! So every prompt is cut at the same absolute positions whatever was reused: whole chunks
//! `[k·C, (k+1)·C)`, then the rest, one piece per decode. Reuse keeps whole chunks only, and
//! never the last token, whose logits give the first generated token
//! ([`Chunking::reusable`]); what follows is read again in the very pieces a cold read
//! makes. This holds for a task that reads its prompt alone; a piece cut short because other
//! sequences fill the batch ([`Chunking::piece_end`]'s `room`) has no such guarantee.

/// The chunk size `C` of one engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Chunking {
    chunk: usize,
}

impl Chunking {
    /// Chunks of `chunk` tokens (at least 1).
    pub(super) fn new(chunk: usize) -> Chunking {
        Chunking {
            chunk: chunk.max(1),
        }
    }

    /// Of `shared` leading tokens of a `len`-token prompt whose cells a slot holds, how many
    /// may be reused: whole chunks, never the last token.
    pub(super) fn reusable(self, shared: usize, len: usize) -> usize {
        let usable = shared.min(len.saturating_sub(1));
        usable / self.chunk * self.chunk
    }

    /// Where the piece read from `start` ends (exclusive), when `room` tokens fit in the
    /// batch: at the next chunk boundary or the prompt's end, whichever comes first.
    pub(super) fn piece_end(self, start: usize, len: usize, room: usize) -> usize {
        ((start / self.chunk + 1) * self.chunk)
            .min(len)
            .min(start + room)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pieces a prompt of `len` tokens is read in from `start`, with ample room.
    fn pieces(chunking: Chunking, start: usize, len: usize) -> Vec<(usize, usize)> {
        let mut pieces = Vec::new();
        let mut at = start;
        while at < len {
            let end = chunking.piece_end(at, len, 1024);
            pieces.push((at, end));
            at = end;
        }
        pieces
    }

    #[test]
    fn a_prompt_is_read_in_whole_chunks_then_the_rest() {
        let chunking = Chunking::new(4);
        assert_eq!(pieces(chunking, 0, 11), vec![(0, 4), (4, 8), (8, 11)]);
        assert_eq!(pieces(chunking, 0, 8), vec![(0, 4), (4, 8)]);
        assert_eq!(pieces(chunking, 0, 9), vec![(0, 4), (4, 8), (8, 9)]);
        assert_eq!(pieces(chunking, 0, 1), vec![(0, 1)]);
        assert_eq!(pieces(chunking, 0, 2), vec![(0, 2)]);
    }

    #[test]
    fn after_any_reuse_the_rest_is_read_in_the_pieces_of_a_cold_read() {
        let chunking = Chunking::new(4);
        for len in 1..40 {
            let cold = pieces(chunking, 0, len);
            for shared in 0..=len {
                let reused = chunking.reusable(shared, len);
                assert!(reused < len.max(1), "the last token is always read");
                assert_eq!(reused % 4, 0);
                let warm = pieces(chunking, reused, len);
                assert!(
                    cold.ends_with(&warm),
                    "len {len}, reused {reused}: {warm:?} not a tail of {cold:?}"
                );
            }
        }
    }

    #[test]
    fn a_piece_cut_short_by_the_batch_realigns_on_the_next_boundary() {
        let chunking = Chunking::new(8);
        assert_eq!(chunking.piece_end(0, 30, 3), 3);
        assert_eq!(chunking.piece_end(3, 30, 100), 8);
        assert_eq!(chunking.reusable(29, 30), 24);
        assert_eq!(
            Chunking::new(0).piece_end(5, 30, 100),
            6,
            "at least one token"
        );
    }
}
