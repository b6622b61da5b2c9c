//! Task files (`warren submit --file`) as pure values: which lines of a JSONL task file still need a result, what one
//! result line holds, and the tally printed at the end. `warren submit --file` (in
//! `cli/submit_file.rs`) does the publishing and the file I/O around these.
//!
//! A task file holds one contract-v1 task per line (blank lines are skipped). A line is sent
//! as it is written: the worker validates it, so a bad line ends with its own error result,
//! like any bad task. A line may carry `custom_id` (a string, as in OpenAI's Batch API),
//! echoed in its result; results are keyed on the line number, which is what resuming reads.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::protocol::{Reply, ReplyStatus};

/// One task of the file.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskLine {
    /// 1-based line number in the file.
    pub line: usize,
    /// The line's `custom_id`, when it is a JSON object with a string `custom_id`.
    pub custom_id: Option<String>,
    /// The line as written, sent as the task body.
    pub body: Vec<u8>,
}

/// The non-blank lines of a task file.
pub fn task_lines(text: &str) -> Vec<TaskLine> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(index, line)| TaskLine {
            line: index + 1,
            custom_id: custom_id(line),
            body: line.as_bytes().to_vec(),
        })
        .collect()
}

fn custom_id(line: &str) -> Option<String> {
    let value: Value = serde_json::from_str(line).ok()?;
    value.get("custom_id")?.as_str().map(str::to_owned)
}

/// One line of the results file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResultLine {
    /// The task's line in the task file.
    pub line: usize,
    /// The task line's `custom_id`, if it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_id: Option<String>,
    /// The task's `message_id` on this run.
    pub id: String,
    /// The worker's final reply (`status` ok or error).
    pub reply: Reply,
}

/// The task-file lines that already have a result in `results` (an earlier, interrupted
/// run's output), each with whether that result is ok. Lines of `results` that do not parse
/// (one cut short by the interruption) are ignored, so their tasks are sent again.
pub fn lines_done(results: &str) -> HashMap<usize, bool> {
    results
        .lines()
        .filter_map(|line| serde_json::from_str::<ResultLine>(line).ok())
        .map(|result| (result.line, result.reply.status == ReplyStatus::Ok))
        .collect()
}

/// What a run did, for the summary.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tally {
    /// Lines skipped because the results file had them already.
    pub already_done: usize,
    /// Of those, lines whose result there is an error.
    pub already_failed: usize,
    /// Replies with status ok.
    pub ok: usize,
    /// Replies with status error, by error code.
    pub failed: BTreeMap<String, usize>,
    /// Lines left without a result (the run was stopped or lost the broker).
    pub unanswered: usize,
}

impl Tally {
    /// Counts one reply.
    pub fn count(&mut self, reply: &Reply) {
        if reply.status == ReplyStatus::Ok {
            self.ok += 1;
            return;
        }
        let code = reply
            .error
            .as_ref()
            .map_or_else(|| "unknown".to_owned(), |e| e.code.to_string());
        *self.failed.entry(code).or_default() += 1;
    }

    /// Replies with status error.
    pub fn failed_total(&self) -> usize {
        self.failed.values().sum()
    }

    /// Whether every line has an ok result, those of earlier runs included.
    pub fn all_ok(&self) -> bool {
        self.failed.is_empty() && self.unanswered == 0 && self.already_failed == 0
    }

    /// The summary line.
    pub fn summary(&self) -> String {
        let mut text = format!(
            "{} ok, {} failed, {} unanswered, {} already done",
            self.ok,
            self.failed_total(),
            self.unanswered,
            self.already_done
        );
        if self.already_failed > 0 {
            text.push_str(&format!(" ({} of them failed)", self.already_failed));
        }
        if !self.failed.is_empty() {
            let codes: Vec<String> = self
                .failed
                .iter()
                .map(|(code, n)| format!("{code}: {n}"))
                .collect();
            text.push_str(&format!(" (failed: {})", codes.join(", ")));
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ErrorCode, TaskError, Timings};

    fn reply(error: Option<ErrorCode>) -> Reply {
        let mut reply: Reply = serde_json::from_value(serde_json::json!({
            "version": 1, "id": "t", "status": "ok", "text": "Paris", "finish_reason": "stop",
            "usage": {"prompt_tokens": 3, "completion_tokens": 1},
            "timings_ms": {"queued": 0, "prompt": 1, "generation": 1, "total": 2},
            "model": "m", "attempt": 1
        }))
        .expect("a valid reply");
        if let Some(code) = error {
            reply = Reply::failure(
                Some("t".into()),
                &TaskError::new(code, "bad"),
                "m",
                1,
                Timings::default(),
            );
        }
        reply
    }

    #[test]
    fn every_non_blank_line_is_a_task_numbered_as_in_the_file() {
        let text =
            "{\"prompt\": \"a\", \"custom_id\": \"first\"}\n\n   \nnot json\n{\"prompt\": \"b\"}";
        let lines = task_lines(text);
        assert_eq!(lines.len(), 3);
        assert_eq!(
            (lines[0].line, lines[0].custom_id.as_deref()),
            (1, Some("first"))
        );
        assert_eq!((lines[1].line, lines[1].custom_id.as_deref()), (4, None));
        assert_eq!(lines[1].body, b"not json");
        assert_eq!(lines[2].line, 5);
    }

    #[test]
    fn lines_with_a_result_are_done_and_a_torn_last_line_is_not() {
        let done = ResultLine {
            line: 2,
            custom_id: None,
            id: "x".into(),
            reply: reply(None),
        };
        let failed = ResultLine {
            line: 5,
            custom_id: Some("c".into()),
            id: "y".into(),
            reply: reply(Some(ErrorCode::InvalidRequest)),
        };
        let whole = format!(
            "{}\n{}\n",
            serde_json::to_string(&done).unwrap(),
            serde_json::to_string(&failed).unwrap()
        );
        let torn = format!("{whole}{{\"line\": 7, \"id\": \"z\", \"rep");
        assert_eq!(lines_done(&torn), HashMap::from([(2, true), (5, false)]));
    }

    #[test]
    fn the_tally_counts_failures_by_code_and_says_whether_all_went_well() {
        let mut tally = Tally::default();
        tally.count(&reply(None));
        assert!(tally.all_ok());
        tally.count(&reply(Some(ErrorCode::InvalidRequest)));
        tally.count(&reply(Some(ErrorCode::InvalidRequest)));
        tally.count(&reply(Some(ErrorCode::Timeout)));
        assert!(!tally.all_ok());
        assert_eq!(
            tally.summary(),
            "1 ok, 3 failed, 0 unanswered, 0 already done (failed: invalid_request: 2, timeout: 1)"
        );
        let unanswered = Tally {
            unanswered: 1,
            ..Tally::default()
        };
        assert!(!unanswered.all_ok());
        // A resumed run whose earlier results hold a failure is not all ok.
        let resumed = Tally {
            ok: 3,
            already_done: 5,
            already_failed: 2,
            ..Tally::default()
        };
        assert!(!resumed.all_ok());
        assert_eq!(
            resumed.summary(),
            "3 ok, 0 failed, 0 unanswered, 5 already done (2 of them failed)"
        );
    }
}
